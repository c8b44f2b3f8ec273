"""An exponential moving average (EMA) of the weights, for validation, the test and best.pt.

After every optimizer step from `start_step` on, each averaged parameter moves towards the live
one: `average = d * average + (1 - d) * parameter`, one fused `_foreach_lerp_` for all of them.
The decay warms up, `d = min(decay, (1 + n) / (warmup_steps + n))` after `n` updates, so the
early average is not dominated by the random initial weights (warmup_steps 0: `decay` from the
first update). Before `start_step` the average simply copies the weights.

Validation and the test run with the averaged weights swapped in (`evaluation_weights`); the
checkpoint keeps both, so resume is exact and `evaluation_state` (src/training/checkpoint.py)
gives eval, predict and export the averaged ones. Buffers (batch-norm statistics) are the live
model's.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from src.training.callbacks import Callback


class EMA(Callback):
    name = "ema"

    def __init__(
        self, model: nn.Module, decay: float, warmup_steps: int = 0, start_step: int = 0
    ) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        self.decay, self.warmup_steps, self.start_step = decay, warmup_steps, start_step
        self.names = [name for name, _ in model.named_parameters()]
        self.parameters = [p for _, p in model.named_parameters()]
        with torch.no_grad():
            self.averages = [p.detach().clone() for p in self.parameters]
        self.updates = 0

    def current_decay(self) -> float:
        if self.warmup_steps <= 0:
            return self.decay
        return min(self.decay, (1 + self.updates) / (self.warmup_steps + self.updates))

    @torch.no_grad()
    def on_step_end(self, runner: Any) -> None:
        live = [p.detach() for p in self.parameters]
        if runner.state.step < self.start_step:
            torch._foreach_copy_(self.averages, live)
            return
        torch._foreach_lerp_(self.averages, live, 1.0 - self.current_decay())
        self.updates += 1

    @contextmanager
    def evaluation_weights(self, runner: Any) -> Iterator[None]:
        with torch.no_grad():
            live = [p.detach().clone() for p in self.parameters]
            torch._foreach_copy_([p.data for p in self.parameters], self.averages)
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_([p.data for p in self.parameters], live)

    def state_dict(self) -> dict[str, Any]:
        return {
            "weights": {n: a.detach().clone() for n, a in zip(self.names, self.averages)},
            "updates": self.updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        weights = state["weights"]
        if set(weights) != set(self.names):
            raise KeyError("the checkpoint's averaged weights do not match this model")
        with torch.no_grad():
            for name, average in zip(self.names, self.averages):
                average.copy_(weights[name])
        self.updates = int(state["updates"])


if __name__ == "__main__":
    from types import SimpleNamespace

    from src.training.state import TrainState

    model = nn.Linear(2, 1)
    ema = EMA(model, decay=0.9)
    runner = SimpleNamespace(state=TrainState())
    for step in range(1, 4):
        with torch.no_grad():
            model.weight.add_(1.0)
        runner.state.step = step
        ema.on_step_end(runner)
    print("live", model.weight.tolist(), "average", ema.averages[0].tolist())
