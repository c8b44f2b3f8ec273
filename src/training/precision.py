"""`runner.precision` as PyTorch objects: an autocast context and a gradient scaler.

"fp32" is plain float32; "bf16" autocasts to bfloat16 (same range as float32, no scaling
needed); "fp16" autocasts to float16 and scales the loss so small gradients do not underflow.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device, precision: str) -> Any:
    dtype = AUTOCAST_DTYPES.get(str(getattr(precision, "value", precision)))
    return nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """Disabled (a pass-through costing nothing) unless precision is fp16."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


if __name__ == "__main__":
    with autocast(torch.device("cpu"), "bf16"):
        out = torch.nn.Linear(4, 2)(torch.randn(3, 4))
    print("bf16 autocast output dtype:", out.dtype)
