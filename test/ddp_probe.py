"""Test-only entry point: the real CLI (`src.main`), with hooks set by the environment.

`torchrun ... -m ddp_probe <overrides>` with PARAMS_DUMP_DIR set writes rank<r>.pt (the model's
state_dict at the end of `fit`, before `test` loads best.pt) so a test can check that all ranks
hold the same weights. EVAL_DELAY_S=<seconds> makes every validation and test batch that slow
(like a slow disk), a wide window in which a test can land a signal; STEP_DELAY_S does the
same for training batches. KILL_IN_SAVE_AT_STEP=<n> makes rank 1 of a group's first attempt
kill itself (SIGKILL) as it starts writing its shard of the sharded checkpoint of step n.
Production code knows nothing about any of them.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch.distributed.checkpoint import FileSystemWriter

from src.main import run
from src.runner import Runner

_fit, _evaluate, _train_batch = Runner.fit, Runner.evaluate, Runner._train_batch
_write_data = FileSystemWriter.write_data


def fit_and_dump(self: Runner, *args, **kwargs) -> None:
    _fit(self, *args, **kwargs)
    out = Path(os.environ["PARAMS_DUMP_DIR"])
    out.mkdir(parents=True, exist_ok=True)
    torch.save(self.plain_model.state_dict(), out / f"rank{self.world.rank}.pt")


class SlowBatches:
    """The loader's batches, each after a pause."""

    def __init__(self, loader: Any, delay: float) -> None:
        self.loader, self.delay = loader, delay

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        for batch in self.loader:
            time.sleep(self.delay)
            yield batch


def slow_evaluate(self: Runner, loader: Any, *args: Any, **kwargs: Any) -> dict[str, float]:
    return _evaluate(self, SlowBatches(loader, float(os.environ["EVAL_DELAY_S"])), *args, **kwargs)


def slow_train_batch(self: Runner, *args: Any, **kwargs: Any) -> bool:
    time.sleep(float(os.environ["STEP_DELAY_S"]))
    return _train_batch(self, *args, **kwargs)


def write_data_or_die(self: FileSystemWriter, *args: Any, **kwargs: Any) -> Any:
    folder = f"step-{int(os.environ['KILL_IN_SAVE_AT_STEP']):07d}"
    first_attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
    if os.environ.get("RANK") == "1" and first_attempt and folder in str(self.path):
        os.kill(os.getpid(), signal.SIGKILL)
    return _write_data(self, *args, **kwargs)


if __name__ == "__main__":
    if "PARAMS_DUMP_DIR" in os.environ:
        Runner.fit = fit_and_dump  # type: ignore[method-assign]
    if "EVAL_DELAY_S" in os.environ:
        Runner.evaluate = slow_evaluate  # type: ignore[method-assign]
    if "STEP_DELAY_S" in os.environ:
        Runner._train_batch = slow_train_batch  # type: ignore[method-assign]
    if "KILL_IN_SAVE_AT_STEP" in os.environ:
        FileSystemWriter.write_data = write_data_or_die  # type: ignore[method-assign]
    run()
