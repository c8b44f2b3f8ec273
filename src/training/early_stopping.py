"""Early stopping: end training when `runner.monitor` has stopped improving.

After each validation the monitored value counts as an improvement when it beats the best so far
by more than `min_delta` (in the direction of `runner.monitor_mode`); after `patience`
validations without one, training ends, with the reason in results.json and the log. The count
is part of the checkpoint: a resumed run goes on counting where it stopped.
"""

from __future__ import annotations

import logging
from typing import Any

from src.training.callbacks import Callback
from src.training.options import Mode, better

log = logging.getLogger(__name__)


class EarlyStopping(Callback):
    name = "early_stopping"

    def __init__(self, monitor: str, mode: Mode | str, patience: int, min_delta: float = 0.0):
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        self.monitor, self.mode = monitor, Mode(mode)
        self.patience, self.min_delta = patience, abs(min_delta)
        self.best: float | None = None
        self.without_improvement = 0

    def on_validation_end(self, runner: Any, metrics: dict[str, float]) -> None:
        value = metrics.get(self.monitor)
        if value is None:
            return
        if better(value, self.best, self.mode, self.min_delta):
            self.best, self.without_improvement = value, 0
            return
        self.without_improvement += 1
        if self.without_improvement >= self.patience:
            reason = (
                f"early stopping: {self.monitor} did not improve on {self.best:.6g} by more than "
                f"{self.min_delta:g} for {self.patience} validations"
            )
            log.info("%s (epoch %d, step %d)", reason, runner.state.epoch, runner.state.step)
            runner.state.stop_reason = reason

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "without_improvement": self.without_improvement}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.without_improvement = state["best"], state["without_improvement"]


if __name__ == "__main__":
    from types import SimpleNamespace

    from src.training.state import TrainState

    runner = SimpleNamespace(state=TrainState())
    stopper = EarlyStopping("val/loss", "min", patience=2, min_delta=0.01)
    for epoch, loss in enumerate([1.0, 0.8, 0.795, 0.81, 0.7]):
        runner.state.epoch = epoch
        stopper.on_validation_end(runner, {"val/loss": loss})
        print(epoch, loss, stopper.without_improvement, runner.state.stop_reason or "-")
