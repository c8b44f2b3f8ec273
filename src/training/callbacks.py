"""Callbacks: what joins the loop at fixed points without adding branches to it.

    after every optimizer step        on_step_end(runner)            EMA update, profiler step
    after every validation            on_validation_end(runner, m)   early stopping, pruning
    around validation and test        evaluation_weights(runner)     EMA swaps its weights in

A callback's `state_dict` goes into every checkpoint under its `name`, so a resumed run continues
it exactly. The Runner calls these hooks in list order; each does nothing unless overridden.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any


class Callback:
    name = ""  # the key of its state in checkpoints ("" = nothing to save)

    def on_step_end(self, runner: Any) -> None:
        """After each optimizer step (state.step already counts it)."""

    def on_validation_end(self, runner: Any, metrics: dict[str, float]) -> None:
        """After each validation, with its metrics (`val/<name>`), before the checkpoint."""

    def evaluation_weights(self, runner: Any) -> AbstractContextManager[None]:
        """The weights validation and the test run with (e.g. an average of the weights)."""
        return nullcontext()

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""


class OnStepEnd(Callback):
    """A plain function after every optimizer step: a profiler's step, a benchmark's clock."""

    def __init__(self, function: Any) -> None:
        self.function = function

    def on_step_end(self, runner: Any) -> None:
        self.function(runner)
