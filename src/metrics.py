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
    """Per-batch training loss and correct counts since the last `drain`.

    One slot per batch (not a running sum) so that a non-finite loss can be traced to the exact
    batch, and so that a checkpoint taken mid-window resumes with identical logged values.
    """

    def __init__(self, capacity: int, device: torch.device) -> None:
        self.losses = torch.zeros(capacity, device=device)
        self.correct = torch.zeros(capacity, device=device)
        self.counts: list[int] = []

    def __len__(self) -> int:
        return len(self.counts)

    def update(self, loss: torch.Tensor, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        i = len(self.counts)
        if i == len(self.losses):  # more batches than planned between drains: grow, rarely
            self.losses = torch.cat([self.losses, torch.zeros_like(self.losses)])
            self.correct = torch.cat([self.correct, torch.zeros_like(self.correct)])
        self.losses[i] = loss.detach()
        self.correct[i] = count_correct(outputs.detach(), targets)
        self.counts.append(int(targets.shape[0]))

    def first_nonfinite(self) -> int | None:
        """Index of the first batch in the window whose loss is NaN or inf (one host sync)."""
        bad = ~torch.isfinite(self.losses[: len(self)])
        return int(bad.nonzero()[0, 0]) if bool(bad.any()) else None

    def drain(self, world: World) -> dict[str, float]:
        """Sample-weighted loss and accuracy over the window, summed over ranks; then reset."""
        n = len(self)
        counts = torch.tensor(self.counts, dtype=self.losses.dtype).to(self.losses.device)
        sums = torch.stack([(self.losses[:n] * counts).sum(), self.correct[:n].sum(), counts.sum()])
        loss_sum, correct, count = all_reduce_sum(sums, world).tolist()
        self.counts = []
        return {"loss": loss_sum / max(count, 1), "acc": correct / max(count, 1), "count": count}

    def state_dict(self) -> dict[str, Any]:
        n = len(self)
        return {
            "losses": self.losses[:n].cpu(),
            "correct": self.correct[:n].cpu(),
            "counts": self.counts,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        n = len(state["counts"])
        self.counts = list(state["counts"])
        self.losses[:n] = state["losses"].to(self.losses.device)
        self.correct[:n] = state["correct"].to(self.correct.device)


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
    meter = WindowMeter(4, torch.device("cpu"))
    for _ in range(3):
        meter.update(torch.tensor(0.5), torch.eye(2), torch.tensor([0, 1]))
    print(meter.drain(World()), "(3 batches of 2, all correct)")
