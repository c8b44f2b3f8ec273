"""The training losses since the last logging step, one per batch, kept on the device.

They say which exact batch first went non-finite (NaN or inf), on any rank, so a diverged run
stops with "non-finite loss at step 6 (epoch 0, batch 5)" and never overwrites a good checkpoint.
"""

from __future__ import annotations

from typing import Any

import torch

from src.launch.distributed import World, all_reduce_sum


class LossWindow:
    def __init__(self) -> None:
        self.losses: list[torch.Tensor] = []

    def __len__(self) -> int:
        return len(self.losses)

    def append(self, loss: torch.Tensor) -> None:
        self.losses.append(loss)  # already detached by the Runner

    def first_nonfinite(self, world: World) -> int | None:
        """Index of the first batch whose loss is non-finite on any rank (one host sync); every
        rank gets the same answer, so they all stop together."""
        if not self.losses:  # the same on every rank: they all see the same number of batches
            return None
        device = self.losses[-1].device
        losses = torch.stack([loss.to(device) for loss in self.losses]).float()
        bad = all_reduce_sum((~torch.isfinite(losses)).float(), world) > 0
        return int(bad.nonzero()[0, 0]) if bool(bad.any()) else None

    def reset(self) -> None:
        self.losses = []

    def state_dict(self) -> dict[str, Any]:
        return {"losses": [loss.cpu() for loss in self.losses]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.losses = list(state["losses"])


if __name__ == "__main__":
    window = LossWindow()
    for value in (0.5, 0.4, float("nan"), 0.3):
        window.append(torch.tensor(value))
    print("first non-finite batch:", window.first_nonfinite(World()))
