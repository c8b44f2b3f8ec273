"""Metric accumulators that live on the training device.

Nothing here reads a value back to the host until asked (`drain`, `result`): a GPU never
waits for Python between steps, and the only synchronisations are on logging steps.
"""

from __future__ import annotations

from typing import Any

import torch

from src.launch.distributed import World, all_reduce_sum


def is_classification(outputs: torch.Tensor, targets: torch.Tensor) -> bool:
    return outputs.ndim == 2 and targets.ndim == 1 and not targets.is_floating_point()


def count_correct(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Correct top-1 predictions in a batch, as a 0-d device tensor (0 when not classifying)."""
    if not is_classification(outputs, targets):
        return outputs.new_zeros(())
    return (outputs.argmax(dim=1) == targets).sum()


class WindowMeter:
    """Per-batch training losses and predictions since the last `drain`, left on the device.

    One loss per batch (not a running sum) so that a non-finite loss can be traced to the exact
    batch, and so that a checkpoint taken mid-window resumes with identical logged values. A step
    costs two tensor ops (detach, argmax); comparing predictions with targets waits for `drain`,
    where one op covers the whole window.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.losses: list[torch.Tensor] = []
        self.predictions: list[torch.Tensor] = []  # argmax per batch (classification only)
        self.targets: list[torch.Tensor] = []
        self.counts: list[int] = []
        self.carried = (0.0, 0)  # (correct, samples) restored from a checkpoint

    def __len__(self) -> int:
        return len(self.counts)

    def update(self, loss: torch.Tensor, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        self.losses.append(loss.detach())  # detached: keeping the graph alive would leak memory
        if is_classification(outputs, targets):
            self.predictions.append(outputs.detach().argmax(dim=1))
            self.targets.append(targets)
        self.counts.append(len(targets))

    def _losses(self) -> torch.Tensor:
        if not self.losses:
            return torch.zeros(0, device=self.device)
        return torch.stack(self.losses).float()

    def _correct(self) -> tuple[torch.Tensor, int]:
        """Correct predictions in the window (with what a checkpoint carried), and their count."""
        correct, seen = self.carried
        total = torch.tensor(correct, dtype=torch.float64, device=self.device)
        if self.predictions:
            hits = torch.cat(self.predictions) == torch.cat(self.targets)
            total = total + hits.sum()
            seen += hits.numel()
        return total, seen

    def first_nonfinite(self, world: World | None = None) -> int | None:
        """Index of the first batch in the window whose loss is NaN or inf on any rank (one host
        sync); every rank gets the same answer, so they all stop together."""
        if len(self) == 0:  # the same on every rank: they all see the same batches
            return None
        bad = (~torch.isfinite(self._losses())).float()
        bad = all_reduce_sum(bad, world or World()) > 0
        return int(bad.nonzero()[0, 0]) if bool(bad.any()) else None

    def summarize(self, world: World) -> dict[str, float]:
        """Sample-weighted loss and accuracy over the window and its count of non-finite losses,
        summed over ranks: one host sync for all of them."""
        counts = torch.tensor(self.counts, dtype=torch.float64).to(self.device)
        correct, seen = self._correct()
        losses = self._losses()
        loss_sum = (losses.double() * counts).sum()
        bad = (~torch.isfinite(losses)).sum().double()
        sums = torch.stack([loss_sum, correct, counts.sum(), counts.new_tensor(seen), bad])
        loss_sum, correct_sum, count, scored, nonfinite = all_reduce_sum(sums, world).tolist()
        return {
            "loss": loss_sum / max(count, 1),
            "acc": correct_sum / max(scored, 1),
            "count": count,
            "nonfinite": nonfinite,
        }

    def reset(self) -> None:
        self.losses, self.predictions, self.targets, self.counts = [], [], [], []
        self.carried = (0.0, 0)

    def state_dict(self) -> dict[str, Any]:
        correct, seen = self._correct()
        return {
            "losses": self._losses().cpu(),
            "counts": list(self.counts),
            "correct": float(correct),
            "scored": seen,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.losses = list(state["losses"].to(self.device).unbind())
        self.counts = list(state["counts"])
        self.predictions, self.targets = [], []
        self.carried = (float(state["correct"]), int(state["scored"]))


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
    print(meter.summarize(World()), "(3 batches of 2, all correct)")
