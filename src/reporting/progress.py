"""What a person watching the run sees: tqdm bars on a terminal, plain log lines elsewhere.

Bars (an epoch bar and a batch bar) redraw at most every 0.2 s whatever the step rate, and their
numbers (loss, accuracy, learning rate, samples/s) change only on logging steps, when the Runner
has read them back from the device anyway. Without a terminal (CI, SLURM logs) a bar would print
a wall of carriage returns, so the same numbers go out as one log line per logging step.
"""

from __future__ import annotations

import logging
import sys
import time
from enum import Enum
from typing import Any

from tqdm import tqdm

from src.reporting.numbers import show

log = logging.getLogger("src.runner")


class ProgressMode(str, Enum):
    auto = "auto"  # bars on a terminal, log lines otherwise
    bar = "bar"
    log = "log"
    none = "none"


def _resolve_mode(mode: str) -> str:
    mode = ProgressMode(mode).value  # raises ValueError on anything else
    if mode == "auto":
        return "bar" if sys.stdout.isatty() else "log"
    return mode


class Progress:
    def __init__(self, mode: str = "auto", enabled: bool = True, file: Any = None) -> None:
        self.mode = _resolve_mode(mode) if enabled else "none"
        self.file = file  # where bars draw (tqdm's default, stderr, when None)
        self._epochs: Any = None
        self._batches: Any = None

    def start(self, max_epochs: int, epoch: int) -> None:
        if self.mode == "bar":
            self._epochs = self._bar(total=max_epochs, initial=epoch, desc="epochs", position=0)

    def start_epoch(self, epoch: int, total: int, done: int = 0) -> None:
        if self.mode == "bar":
            self._batches = self._bar(
                total=total, initial=done, desc=f"epoch {epoch}", position=1, leave=False
            )

    def _bar(self, **kwargs: Any) -> Any:
        return tqdm(file=self.file, dynamic_ncols=True, mininterval=0.2, **kwargs)

    def advance(self) -> None:
        """One batch done: cheap enough for every step (tqdm only redraws on its interval)."""
        if self._batches is not None:
            self._batches.update()

    def show(self, step: int, epoch: int, metrics: dict[str, float]) -> None:
        text = "  ".join(_format(k, v) for k, v in metrics.items())
        if self._batches is not None:
            self._batches.set_postfix_str(text, refresh=False)
        elif self.mode == "log":
            log.info("epoch %d step %d  %s", epoch, step, text)

    def end_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        if self._batches is not None:
            self._batches.close()
            self._batches = None
        if self._epochs is not None:
            self._epochs.update()
            self._epochs.set_postfix_str(_summary(metrics))
        if self.mode != "none":
            self.write(f"epoch {epoch}  {_summary(metrics)}")

    def write(self, message: str) -> None:
        """A line that should survive the bars (and reach the log file)."""
        if self.mode == "bar":
            tqdm.write(message, file=self.file or sys.stdout)
            log.debug(message)
        elif self.mode == "log":
            log.info(message)

    def close(self) -> None:
        for bar in (self._batches, self._epochs):
            if bar is not None:
                bar.close()
        self._batches = self._epochs = None


class Throughput:
    """Samples per second since the previous call (the first: since it was made)."""

    def __init__(self, samples_seen: int = 0) -> None:
        self.last = (time.perf_counter(), samples_seen)

    def rate(self, samples_seen: int) -> float:
        now = time.perf_counter()
        then, seen = self.last
        self.last = (now, samples_seen)
        return (samples_seen - seen) / max(now - then, 1e-9)


def _format(key: str, value: float) -> str:
    if key == "lr":
        return f"lr {value:.2e}"
    if key == "samples_per_s":
        return f"{value:,.0f} samples/s"
    return f"{key} {show(value)}"


def _summary(metrics: dict[str, float]) -> str:
    return "  ".join(f"{k} {show(v)}" for k, v in metrics.items())


if __name__ == "__main__":
    progress = Progress("bar")
    progress.start(max_epochs=1, epoch=0)
    progress.start_epoch(0, total=50)
    for step in range(50):
        time.sleep(0.01)
        progress.advance()
        if step % 10 == 9:
            progress.show(step + 1, 0, {"loss": 1 / (step + 1), "acc": 0.5, "lr": 1e-3})
    progress.end_epoch(0, {"val/acc": 0.9})
    progress.close()
