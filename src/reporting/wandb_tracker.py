"""Weights & Biases runs (`logger=[tensorboard,wandb]`), online or offline.

`mode=auto` follows `WANDB_MODE` when it is set; otherwise the run goes online when an API key
is known (`wandb login`, WANDB_API_KEY) and the W&B host answers, and offline when not: the run
is then written under `<dir>/wandb/offline-run-*` (dir: the run directory) and uploaded later
with `wandb sync <that folder>`. The probe runs on the tracker's thread, never in the loop.

- The run's id is chosen here before the run exists and kept in every checkpoint: a resumed
  run continues the same W&B run (`resume="allow"`), online or offline.
- Rows are logged with their training step as the `step` metric (the x-axis of every chart),
  so a resumed run, whose own counter starts again, never has its rows dropped as out of order.
- Sweep trials share a group: the sweep folder's name unless `group` is set.
"""

from __future__ import annotations

import logging
import netrc
import os
import secrets
import socket
import string
from enum import Enum
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from src.reporting.trackers import FINISHED, Tracker, final_checkpoints, relative_name

log = logging.getLogger(__name__)
DEFAULT_HOST = "https://api.wandb.ai"
PROBE_TIMEOUT_S = 3.0  # how long `mode=auto` waits for the W&B host to answer
STEP = "step"  # the x-axis metric: the optimizer step, as in metrics.csv


class WandbMode(str, Enum):
    auto = "auto"  # WANDB_MODE, else online when logged in and the host answers, else offline
    online = "online"
    offline = "offline"


class WandbTracker(Tracker):
    name = "wandb"
    package = "wandb"
    extra = "wandb"  # pip install -e ".[wandb]"

    def __init__(
        self,
        run_dir: str | Path,
        sweep_dir: Path | None = None,
        *,
        project: str,
        entity: str | None,
        mode: WandbMode | str,
        dir: str | None,
        group: str | None,
        tags: list[str],
        log_checkpoints: bool,
    ) -> None:
        self.run_dir = Path(run_dir).absolute()
        self.dir = Path(dir).absolute() if dir else self.run_dir
        self.project, self.entity, self.mode = project, entity, WandbMode(mode)
        self.group = group or (relative_name(sweep_dir) if sweep_dir is not None else None)
        self.tags, self.log_checkpoints = list(tags), log_checkpoints
        self._run: Any = None

    def new_run_id(self) -> str:
        alphabet = string.ascii_lowercase + string.digits  # what W&B's own ids are made of
        return "".join(secrets.choice(alphabet) for _ in range(8))

    def prepare(self) -> None:
        import wandb

        self._wandb = wandb
        self._mode = self._choose_mode()

    def open(self, params: dict[str, Any]) -> None:
        wandb = self._wandb
        self.dir.mkdir(parents=True, exist_ok=True)
        self._run = wandb.init(
            project=self.project,
            entity=self.entity,
            id=self.run_id,
            resume="allow",  # the same id continues the run; a new one starts it
            name=relative_name(self.run_dir),
            group=self.group,
            tags=self.tags,
            dir=str(self.dir),
            mode=self._mode,
            config=params,
            settings=wandb.Settings(console="off", silent=True),  # never wrap our stdout
        )
        self._run.config.update(params, allow_val_change=True)  # a resume may change values
        self._run.define_metric(STEP)
        self._run.define_metric("*", step_metric=STEP)
        if self._mode == "offline":
            folder = Path(self._run.dir).parent
            log.info(
                "wandb: offline run %s in %s; upload it with: wandb sync %s",
                self.run_id,
                folder,
                folder,
            )
        else:
            log.info("wandb: run %s (%s)", self.run_id, self._run.url)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        self._run.log({**values, STEP: step})

    def results(self, results: dict[str, Any], step: int) -> None:
        plain = (str, int, float, bool)
        self._run.summary.update({k: v for k, v in results.items() if isinstance(v, plain)})

    def close(self, status: str = FINISHED) -> None:
        if self._run is None:
            return
        if self.log_checkpoints and status == FINISHED:
            artifact = self._wandb.Artifact(f"checkpoints-{self.run_id}", type="model")
            for path in final_checkpoints(self.run_dir):
                artifact.add_file(str(path))
            self._run.log_artifact(artifact)
        self._run.finish(exit_code=0 if status == FINISHED else 1)
        self._run = None

    def _choose_mode(self) -> str:
        if self.mode != WandbMode.auto:
            return self.mode.value
        if os.environ.get("WANDB_MODE"):
            return os.environ["WANDB_MODE"]
        url = urlparse(os.environ.get("WANDB_BASE_URL", DEFAULT_HOST))
        host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
        if not (os.environ.get("WANDB_API_KEY") or _netrc_has(host)):
            log.info("wandb: not logged in (wandb login, WANDB_API_KEY): offline run")
            return "offline"
        try:
            socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S).close()
        except OSError as err:
            log.info("wandb: %s does not answer (%s): offline run", host, err)
            return "offline"
        return "online"


def _netrc_has(host: str) -> bool:
    try:
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


if __name__ == "__main__":
    import tempfile

    from src.reporting.trackers import TrackerThread

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with tempfile.TemporaryDirectory() as tmp:
        tracker = WandbTracker(
            tmp,
            project="demo",
            entity=None,
            mode="offline",
            dir=None,
            group=None,
            tags=[],
            log_checkpoints=False,
        )
        tracker.run_id = tracker.new_run_id()
        thread = TrackerThread(tracker, {})
        thread.call("open", {"optimizer.lr": 0.01})
        for step in range(1, 4):
            thread.call("scalars", step, {"train/loss": 1.0 / step})
        thread.close(FINISHED)
        print(sorted(p.name for p in (Path(tmp) / "wandb").iterdir()))
