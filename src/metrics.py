"""Metric accumulators that live on the training device.

Nothing here reads a value back to the host until asked (`drain`, `result`): a GPU never
waits for Python between steps, and the only synchronisations are on logging steps.
"""

from __future__ import annotations

from typing import Any

import torch

from src.distributed import World, all_reduce_sum


def count_correct(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Correct top-1 predictions in a batch, as a 0-d device tensor (0 when not classifying)."""
    if outputs.ndim != 2 or targets.ndim != 1 or targets.is_floating_point():
        return outputs.new_zeros(())
    return (outputs.argmax(dim=1) == targets).sum()


class WindowMeter:
    """Per-batch training loss and correct counts since the last `drain`, left on the device.

    One entry per batch (not a running sum) so that a non-finite loss can be traced to the exact
    batch, and so that a checkpoint taken mid-window resumes with identical logged values. An
    update is four tensor ops and two list appends; `drain` stacks them in one go.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.losses: list[torch.Tensor] = []
        self.correct: list[torch.Tensor] = []
        self.counts: list[int] = []

    def __len__(self) -> int:
        return len(self.counts)

    @torch.no_grad()
    def update(self, loss: torch.Tensor, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        self.losses.append(loss.detach())  # detached: keeping the graph alive would leak memory
        self.correct.append(count_correct(outputs, targets))
        self.counts.append(int(targets.shape[0]))

    def _stacked(self) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.counts:
            empty = torch.zeros(0, device=self.device)
            return empty, empty
        return torch.stack(self.losses).float(), torch.stack(self.correct).double()

    def first_nonfinite(self, world: World | None = None) -> int | None:
        """Index of the first batch in the window whose loss is NaN or inf on any rank (one host
        sync); every rank gets the same answer, so they all stop together."""
        if len(self) == 0:  # the same on every rank: they all see the same batches
            return None
        bad = (~torch.isfinite(self._stacked()[0])).float()
        bad = all_reduce_sum(bad, world or World()) > 0
        return int(bad.nonzero()[0, 0]) if bool(bad.any()) else None

    def drain(self, world: World) -> dict[str, float]:
        """Sample-weighted loss and accuracy over the window, summed over ranks; then reset."""
        losses, correct = self._stacked()
        counts = torch.tensor(self.counts, dtype=torch.float64).to(self.device)
        sums = torch.stack([(losses.double() * counts).sum(), correct.sum(), counts.sum()])
        loss_sum, correct_sum, count = all_reduce_sum(sums, world).tolist()
        self.losses, self.correct, self.counts = [], [], []
        return {
            "loss": loss_sum / max(count, 1),
            "acc": correct_sum / max(count, 1),
            "count": count,
        }

    def state_dict(self) -> dict[str, Any]:
        losses, correct = self._stacked()
        return {"losses": losses.cpu(), "correct": correct.cpu(), "counts": list(self.counts)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.losses = list(state["losses"].to(self.device).unbind())
        self.correct = list(state["correct"].to(self.device).unbind())
        self.counts = list(state["counts"])


class SumMeter:
    """Running sums for an evaluation pass (loss weighted by batch size, correct, count).

    The sample count is reported too: it shows at a glance what a limited pass covered."""

    def __init__(self, device: torch.device) -> None:
        self.sums = torch.zeros(3, device=device, dtype=torch.float64)

    def update(self, loss: torch.Tensor, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        n = targets.shape[0]
        batch = torch.stack([loss.detach().double() * n, count_correct(outputs, targets).double()])
        self.sums[:2] += batch
        self.sums[2] += n

    def result(self, world: World, prefix: str) -> dict[str, float]:
        loss_sum, correct, count = all_reduce_sum(self.sums.clone(), world).tolist()
        n = max(count, 1)
        return {
            f"{prefix}/loss": loss_sum / n,
            f"{prefix}/acc": correct / n,
            f"{prefix}/samples": int(count),
        }


if __name__ == "__main__":
    meter = WindowMeter(torch.device("cpu"))
    for _ in range(3):
        meter.update(torch.tensor(0.5), torch.eye(2), torch.tensor([0, 1]))
    print(meter.drain(World()), "(3 batches of 2, all correct)")
