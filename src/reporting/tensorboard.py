"""TensorBoard event files in the run directory (`logger=[tensorboard]`, the default).

Importing `torch.utils.tensorboard` costs about 1.5-3 s: it happens on the tracker's thread
(src/reporting/trackers.py), overlapping with data loading and the first steps. The event file
is opened at the first scalar, after any purge a resumed run asked for, and flushed whenever
the thread has caught up, so it is complete even if `close` is never reached.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from src.reporting.trackers import FINISHED, Tracker, numbers


class TensorBoardTracker(Tracker):
    """`<split>/<metric>` scalars; the config with the final metrics in the HPARAMS tab."""

    name = "tensorboard"
    package = "tensorboard"
    keeps_run = False  # its event files are in the run directory: nothing to reopen

    def __init__(self, run_dir: str | Path, sweep_dir: Path | None = None) -> None:
        # No grouping needed: `make tensorboard DIR=<sweep folder>` shows every trial in it.
        self.log_dir = Path(run_dir)
        self._writer: Any = None
        self._purge_step: int | None = None
        self._params: dict[str, Any] = {}

    def prepare(self) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self._writer_class = SummaryWriter

    def open(self, params: dict[str, Any]) -> None:
        self._params = {k: _hparam(v) for k, v in params.items()}

    def purge_after(self, step: int) -> None:
        self._purge_step = step + 1  # TensorBoard drops the earlier run's events from here on

    def scalars(self, step: int, values: dict[str, float]) -> None:
        writer = self._open_writer()
        for tag, value in values.items():
            writer.add_scalar(tag, value, step)
        writer.flush()

    def results(self, results: dict[str, Any], step: int) -> None:
        """The HPARAMS tab compares runs: their settings beside test and best validation."""
        from torch.utils.tensorboard.summary import hparams as hparams_summary

        final = numbers({k: v for k, v in results.items() if k.startswith(("test/", "best/val/"))})
        writer = self._open_writer()
        for summary in hparams_summary(self._params, final):
            writer.file_writer.add_summary(summary, step)
        for tag, value in final.items():
            writer.add_scalar(tag, value, step)
        writer.flush()

    def close(self, status: str = FINISHED) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _open_writer(self) -> Any:
        if self._writer is None:
            self._writer = self._writer_class(str(self.log_dir), purge_step=self._purge_step)
        return self._writer


def _hparam(value: Any) -> bool | int | float | str:
    """TensorBoard takes bools, numbers and strings; anything else (lists, None) as text."""
    return value if isinstance(value, bool | int | float | str) else str(value)


if __name__ == "__main__":
    import tempfile

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from src.reporting.trackers import TrackerThread, flatten

    with tempfile.TemporaryDirectory() as tmp:
        tb = TrackerThread(TensorBoardTracker(tmp), {})
        tb.call("open", flatten({"optimizer": {"lr": 0.01, "betas": [0.9, 0.99]}}))
        for step in range(1, 4):
            tb.call("scalars", step, {"train/loss": 1.0 / step, "train/acc": 0.3 * step})
        tb.call("results", {"test/acc": 0.9, "status": "completed"}, 3)
        tb.close(FINISHED)
        events = EventAccumulator(tmp)
        events.Reload()
        print(events.Tags()["scalars"])
