"""`${run_stamp:}`: the name of a run directory, identical on every rank of one job.

Each torchrun rank composes its own config, so a plain `${now:...}` could name different
folders on different ranks. Precedence: $RUN_STAMP (launch.sh sets it for every mode), then the
torchrun job id with the date, then the current time with the process id; the result is fixed
for the process. The process id makes two launches in the same second differ on one host (the
run directory's lock, src/launch/run_dir.py, refuses whatever still collides).
A multirun hands its stamp on to the worker processes a launcher starts (`ShareRunStamp`), so
that parallel trials (hydra/launcher=joblib) all land in the same sweep folder.
"""

from __future__ import annotations

import os
from datetime import datetime
from functools import cache
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf


@cache
def run_stamp() -> str:
    if os.environ.get("RUN_STAMP"):
        return os.environ["RUN_STAMP"]
    now = datetime.now()
    job = os.environ.get("TORCHELASTIC_RUN_ID")
    if job and job != "none":
        return f"{now:%Y-%m-%d}/torchrun-{job[:12]}"
    return f"{now:%Y-%m-%d}/{now:%H-%M-%S}-{os.getpid()}"


def register_run_stamp() -> None:
    if not OmegaConf.has_resolver("run_stamp"):
        OmegaConf.register_new_resolver("run_stamp", run_stamp)


class ShareRunStamp(Callback):
    """Hydra callback: worker processes started after this point inherit the stamp."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        os.environ["RUN_STAMP"] = run_stamp()


if __name__ == "__main__":
    print(run_stamp())
