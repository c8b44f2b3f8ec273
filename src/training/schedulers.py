"""Learning-rate schedules stepped once per optimizer step.

Every factory takes the optimizer and the planned number of optimizer steps, so `main.py`
builds any of them the same way: `instantiate(cfg.scheduler)(optimizer, total_steps=n)`.
The peak learning rate is always `optimizer.lr` from the optimizer config.
"""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR


def one_cycle(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    pct_start: float = 0.25,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
) -> LRScheduler:
    peak = [group["lr"] for group in optimizer.param_groups]
    if total_steps < 4:  # too short for two phases: OneCycleLR would divide by zero
        return LambdaLR(optimizer, lambda step: 1.0)
    pct_start = max(pct_start, 2 / total_steps)  # each phase needs at least two steps
    return OneCycleLR(
        optimizer,
        max_lr=peak,
        total_steps=max(total_steps, 1),
        pct_start=pct_start,
        div_factor=div_factor,
        final_div_factor=final_div_factor,
    )


def warmup_cosine(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup_steps: int = 0,
    min_lr_ratio: float = 0.0,
) -> LRScheduler:
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)


if __name__ == "__main__":
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    sched = warmup_cosine(opt, total_steps=10, warmup_steps=2)
    lrs = []
    for _ in range(10):
        lrs.append(round(opt.param_groups[0]["lr"], 4))
        opt.step()
        sched.step()
    print("warmup_cosine lr per step:", lrs)
