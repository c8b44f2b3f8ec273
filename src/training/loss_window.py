"""Which batch of a logging window first went non-finite (NaN or inf), on any rank.

The Runner keeps the window's training losses in a plain list, one detached tensor per batch;
this answers for the list, so a diverged run stops with "non-finite loss at step 6 (epoch 0,
batch 5)" and never overwrites a good checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import torch

from src.launch.distributed import World, all_reduce_sum
from src.launch.signals import StopTraining
from src.training.state import TrainState


def first_nonfinite(losses: list[torch.Tensor], world: World) -> int | None:
    """Index of the first batch whose loss is non-finite on any rank (one host sync); every
    rank gets the same answer, so they all stop together."""
    if not losses:  # the same on every rank: they all see the same number of batches
        return None
    device = losses[-1].device
    stacked = torch.stack([loss.to(device) for loss in losses]).float()
    bad = all_reduce_sum((~torch.isfinite(stacked)).float(), world) > 0
    return int(bad.nonzero()[0, 0]) if bool(bad.any()) else None


def nonfinite_stop(
    losses: list[torch.Tensor], world: World, state: TrainState, accumulate: int, kept: Path
) -> StopTraining | None:
    """The error that stops a diverged run (exit code 3), naming its first bad batch and step;
    None while every loss of the window is finite."""
    bad = first_nonfinite(losses, world)
    if bad is None:
        return None
    batch = state.batch_in_epoch - len(losses) + bad
    step = state.step - (len(losses) - bad - 1) // accumulate
    return StopTraining(
        f"non-finite loss at step {step} (epoch {state.epoch}, batch {batch}); "
        f"last good checkpoint kept at {kept}",
        exit_code=3,
    )


if __name__ == "__main__":
    window = [torch.tensor(v) for v in (0.5, 0.4, float("nan"), 0.3)]
    print("first non-finite batch:", first_nonfinite(window, World()))
