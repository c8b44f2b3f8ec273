"""Where metrics go: `metrics.csv` and TensorBoard event files in the run directory.

`metrics.csv` has one row per logging event, its columns `step, epoch, split` and then the
names given (the task's metrics, lr, samples_per_s); TensorBoard gets the same numbers as
`<split>/<metric>` scalars, and the run's hyperparameters with its final metrics at the end.
Only rank 0 writes (`enabled=False` elsewhere). On resume the file is cut back to the
checkpoint's step, so steps that were logged after the last checkpoint are not duplicated.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from src.common.files import atomic_open
from src.reporting.tensorboard import TensorBoardWriter

INDEX = ["step", "epoch", "split"]


class MetricLogger:
    def __init__(
        self, run_dir: str | Path, columns: Sequence[str] = ("loss",), enabled: bool = True
    ) -> None:
        self.path = Path(run_dir) / "metrics.csv"
        self.enabled = enabled
        self.fields = [*INDEX, *(c for c in columns if c not in INDEX)]
        self._handle: Any = None
        self._writer: csv.DictWriter | None = None
        self.tensorboard = TensorBoardWriter(run_dir) if enabled else None

    def log(self, split: str, step: int, epoch: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        if self._writer is None:
            self._open()
        row = {"step": step, "epoch": epoch, "split": split}
        row.update({k: _fmt(v) for k, v in metrics.items() if k in self.fields})
        assert self._writer is not None
        self._writer.writerow(row)
        self._handle.flush()
        if self.tensorboard is not None:
            self.tensorboard.scalars(split, step, metrics)

    def log_hparams(self, hparams: dict[str, Any], metrics: dict[str, Any], step: int) -> None:
        """TensorBoard's HPARAMS tab: this run's settings beside its final metrics."""
        if self.tensorboard is not None:
            self.tensorboard.hparams(hparams, metrics, step)

    def truncate_after(self, step: int) -> None:
        """Drop rows logged after `step` (work that the resumed run will redo)."""
        if self.tensorboard is not None:
            self.tensorboard.purge_after(step)
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

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle, self._writer = None, None
        if self.tensorboard is not None:
            self.tensorboard.close()
            self.tensorboard = None


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

    with tempfile.TemporaryDirectory() as tmp:
        logger = MetricLogger(tmp, ["loss", "acc", "lr"])
        logger.log("train", 1, 0, {"loss": 2.3, "acc": 0.1, "lr": 0.01})
        logger.log("train", 2, 0, {"loss": 2.1, "acc": 0.2, "lr": 0.01})
        logger.truncate_after(1)
        logger.close()
        print(read_metrics(Path(tmp) / "metrics.csv"))
        print(sorted(p.name.split(".")[0] for p in Path(tmp).iterdir()))
