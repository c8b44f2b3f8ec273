"""`runner.precision` as the three things a step needs: a forward context, a backward, a step.

"fp32" is plain float32; "bf16" autocasts to bfloat16 (same range as float32, no scaling
needed); "fp16" autocasts to float16 and scales the loss so small gradients do not underflow
(the scaler unscales before clipping and skips a step whose gradients overflowed).
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch
from torch import nn

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
_NO_CONTEXT = nullcontext()  # reusable, and cheaper than building one per step


class MixedPrecision:
    def __init__(self, device: torch.device, precision: Any) -> None:
        name = str(getattr(precision, "value", precision))
        dtype = AUTOCAST_DTYPES.get(name)
        self.context: Any = _NO_CONTEXT
        if dtype is not None:
            self.context = torch.autocast(device.type, dtype=dtype)
        # Disabled (a pass-through costing nothing) unless fp16.
        self.scaler = torch.amp.GradScaler(device.type, enabled=name == "fp16")

    def autocast(self) -> Any:
        """The context of a forward pass and its loss."""
        return self.context

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler.is_enabled() else loss).backward()

    def step(self, optimizer: torch.optim.Optimizer, model: nn.Module, clip: float) -> None:
        """Clip the global gradient norm (when clip > 0), then step the optimizer."""
        if clip > 0:
            self.scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), clip)
        if self.scaler.is_enabled():
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()

    def state_dict(self) -> dict[str, Any]:
        return self.scaler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scaler.load_state_dict(state)


if __name__ == "__main__":
    with MixedPrecision(torch.device("cpu"), "bf16").autocast():
        out = torch.nn.Linear(4, 2)(torch.randn(3, 4))
    print("bf16 autocast output dtype:", out.dtype)
