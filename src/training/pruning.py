"""Pruning: end a sweep trial early when a study says its validation curve is not promising.

After each validation the monitored value goes to `report(step, value)`, which records it and
answers whether to prune (src/sweep/study_trial.py asks the Optuna study's pruner). The step is
the number of epochs completed, so trials are compared epoch by epoch (a pruner's warm-up
`n_warmup_steps` counts epochs). Training then ends
as early stopping ends it: `state.stop_reason` says why, and results.json records the trial as
`pruned`. Only the first rank asks; every rank follows its answer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

from src.launch.distributed import any_rank
from src.training.callbacks import Callback

log = logging.getLogger(__name__)

Report = Callable[[int, float], bool]  # (step, value) -> prune now?


class Pruning(Callback):
    def __init__(self, monitor: str, report: Report | None) -> None:
        self.monitor, self.report = monitor, report  # report None: a rank that only follows
        self.pruned = False

    def on_validation_end(self, runner: Any, metrics: dict[str, float]) -> None:
        value = metrics.get(self.monitor)
        prune = (
            self.report is not None and value is not None and self.report(runner.state.epoch, value)
        )
        if runner.world.is_distributed:
            prune = any_rank(torch.tensor(prune, device=runner.device), runner.world)
        if not prune:
            return
        self.pruned = True
        epochs = runner.state.epoch
        reason = f"pruned: {self.monitor} {value:.6g} after {epochs} epochs is not promising"
        log.info("%s (step %d)", reason, runner.state.step)
        runner.state.stop_reason = reason


def pruned(callbacks: list[Callback]) -> bool:
    """True when a Pruning callback among them ended training."""
    return any(isinstance(c, Pruning) and c.pruned for c in callbacks)


if __name__ == "__main__":
    from types import SimpleNamespace

    from src.launch.distributed import World
    from src.training.state import TrainState

    runner = SimpleNamespace(state=TrainState(), world=World(), device=torch.device("cpu"))
    pruning = Pruning("val/acc", lambda step, value: value < 0.5)
    for epoch, acc in enumerate([0.6, 0.4], start=1):
        runner.state.epoch = epoch
        pruning.on_validation_end(runner, {"val/acc": acc})
        print(epoch, acc, pruning.pruned, runner.state.stop_reason or "-")
