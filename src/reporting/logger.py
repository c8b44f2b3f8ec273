"""Where metrics go: `metrics.csv` in the run directory, always, and the chosen trackers.

`metrics.csv` has one row per logging event, its columns `step, epoch, split` and then the
names given (the task's metrics, lr, samples_per_s). Every tracker (TensorBoard, MLflow, W&B:
src/reporting/trackers.py) gets the same numbers as `<split>/<metric>` at the same steps, the
flat config when training begins and the results at the end, each through a queue to its own
thread: a logging step costs the loop a csv row and one queue put per tracker.
Only rank 0 writes (`enabled=False` elsewhere). On resume the file is cut back to the
checkpoint's step, so steps that were logged after the last checkpoint are not duplicated.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from src.common.files import atomic_open
from src.reporting.trackers import FINISHED, Tracker, TrackerThread, ending, numbers

INDEX = ["step", "epoch", "split"]


class MetricLogger:
    """`trackers` start importing at once, on their threads; `resume_ids` (a checkpoint's
    `trackers` entry, None for a fresh run) makes them reopen their runs."""

    def __init__(
        self,
        run_dir: str | Path,
        columns: Sequence[str] = ("loss",),
        enabled: bool = True,
        trackers: Sequence[Tracker] = (),
        resume_ids: dict[str, str] | None = None,
    ) -> None:
        self.path = Path(run_dir) / "metrics.csv"
        self.enabled = enabled
        self.fields = [*INDEX, *(c for c in columns if c not in INDEX)]
        self._handle: Any = None
        self._writer: csv.DictWriter | None = None
        for tracker in trackers if enabled else ():
            tracker.resuming = resume_ids is not None
            tracker.run_id = (resume_ids or {}).get(tracker.name) or tracker.new_run_id()
        # Checkpoints store this dict; the threads only ever change its values, never its keys.
        self.run_ids = {t.name: t.run_id for t in trackers if enabled and t.keeps_run}
        self.trackers = [TrackerThread(t, self.run_ids) for t in trackers if enabled]

    def log(self, split: str, step: int, epoch: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        if self._writer is None:
            self._open()
        columns = {k: v for k, v in metrics.items() if k in self.fields}
        assert self._writer is not None
        self._writer.writerow(
            {"step": step, "epoch": epoch, "split": split}
            | {k: _fmt(v) for k, v in columns.items()}
        )
        self._handle.flush()
        if self.trackers:  # the trackers get the row's own numbers, unrounded
            values = {f"{split}/{k}": v for k, v in numbers(columns).items()}
            for tracker in self.trackers:
                tracker.call("scalars", step, values)

    @contextmanager
    def tracking(self, params: dict[str, Any]) -> Iterator[None]:
        """Around training: the trackers open their runs and log the flat config `params`; at
        the end, however it comes, the logger closes and the runs end FINISHED, FAILED or KILLED
        (a signal). A start that fails before this creates no tracker run."""
        self.begin(params)
        try:
            yield
        except BaseException as err:
            self.close(ending(err))
            raise
        self.close()

    def begin(self, params: dict[str, Any]) -> None:
        for tracker in self.trackers:
            tracker.call("open", params)

    def log_results(self, results: dict[str, Any], step: int) -> None:
        """The run's results (what results.json holds) as the trackers' final metrics."""
        for tracker in self.trackers:
            tracker.call("results", results, step)

    def truncate_after(self, step: int) -> None:
        """Drop rows logged after `step` (work that the resumed run will redo)."""
        for tracker in self.trackers:
            tracker.call("purge_after", step)
        if not self.enabled or not self.path.exists():
            return
        header, rows = _read(self.path)
        self._rewrite([r for r in rows if int(r["step"]) <= step], header)

    def _open(self) -> None:
        """Append to the file; a file written with other columns is rewritten with all of them."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() and self.path.stat().st_size > 0:
            header, rows = _read(self.path)
            if header != self.fields:
                self._rewrite(rows, header)
        else:
            self._rewrite([], self.fields)
        self._handle = open(self.path, "a", newline="")  # noqa: SIM115 (kept open across logs)
        self._writer = csv.DictWriter(self._handle, self.fields, lineterminator="\n")

    def _rewrite(self, rows: list[dict[str, str]], header: list[str]) -> None:
        self.fields = [*header, *(f for f in self.fields if f not in header)]
        with atomic_open(self.path, "w") as handle:
            writer = csv.DictWriter(handle, self.fields, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)

    def close(self, status: str = FINISHED) -> None:
        """Close metrics.csv; the trackers send what is queued and end their runs with
        `status` (FINISHED, FAILED, KILLED), each within its own time limit."""
        if self._handle is not None:
            self._handle.close()
            self._handle, self._writer = None, None
        for tracker in self.trackers:
            tracker.close(status)
        self.trackers = []


def _fmt(value: float) -> str:
    return f"{value:.8g}" if isinstance(value, float) else str(value)


def _read(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def read_metrics(path: str | Path) -> list[dict[str, str]]:
    return _read(Path(path))[1]


if __name__ == "__main__":
    import tempfile

    from src.reporting.tensorboard import TensorBoardTracker

    with tempfile.TemporaryDirectory() as tmp:
        logger = MetricLogger(tmp, ["loss", "acc", "lr"], trackers=[TensorBoardTracker(tmp)])
        logger.begin({"optimizer.lr": 0.01})
        logger.log("train", 1, 0, {"loss": 2.3, "acc": 0.1, "lr": 0.01})
        logger.log("train", 2, 0, {"loss": 2.1, "acc": 0.2, "lr": 0.01})
        logger.truncate_after(1)
        logger.close()
        print(read_metrics(Path(tmp) / "metrics.csv"))
        print(sorted(p.name.split(".")[0] for p in Path(tmp).iterdir()))
