"""`Meter`: a task's metrics, accumulated on the device and reduced across ranks in one read.

Every metric here is a function of additive totals: the sample-weighted loss, the sample count
and the totals `Task.reduce` makes of what `Task.batch_values` kept (correct predictions,
squared errors, a confusion matrix). Totals add up over batches and over ranks, so a whole
evaluation, or a window of training steps, costs one concatenation, one all-reduce and one host
read, in `compute`. `update` only appends device tensors to lists: it never waits for the device.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

if TYPE_CHECKING:
    from src.task.base import Task


class Meter:
    """Per-batch losses, sample counts and the task's batch values since the last `reset`."""

    def __init__(self, task: Task) -> None:
        self.task = task
        self.losses: list[torch.Tensor] = []
        self.counts: list[int] = []
        self.values: dict[str, list[torch.Tensor]] = {}

    def __len__(self) -> int:
        return len(self.counts)

    def update(self, loss: torch.Tensor, outputs: Any, batch: Any, samples: int) -> None:
        """One batch: its loss, `samples` (`task.batch_size(batch)`) and its batch values.

        Everything kept is detached: holding on to the graph would keep every activation."""
        self.losses.append(loss.detach())
        self.counts.append(samples)
        for key, value in self.task.batch_values(outputs, batch).items():
            self.values.setdefault(key, []).append(value.detach())

    def compute(self) -> dict[str, float]:
        """`loss`, the task's metrics and `samples`, over every batch and every rank."""
        # the newest batch's device: restored (CPU) tensors join the training device's here
        device = self.losses[-1].device if self.losses else torch.device("cpu")
        counts = torch.tensor(self.counts, dtype=torch.float64).to(device)
        loss_sum = (_stack(self.losses, device).double() * counts).sum() if self.losses else None
        parts = [
            (loss_sum if loss_sum is not None else counts.new_zeros(())).reshape(1),
            counts.sum().reshape(1),
        ]
        kept = {key: [v.to(device) for v in batches] for key, batches in self.values.items()}
        shapes = {}
        for key, total in (self.task.reduce(kept) if kept else {}).items():
            shapes[key] = total.shape
            parts.append(total.double().reshape(-1))
        flat = torch.cat(parts)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(flat)
        host = flat.cpu()  # the one read back from the device
        samples = int(host[1])
        totals, offset = {}, 2
        for key, shape in shapes.items():
            size = shape.numel()
            total = host[offset : offset + size].reshape(shape)
            totals[key] = float(total) if total.ndim == 0 else total
            offset += size
        loss = float(host[0]) / max(samples, 1)
        return {"loss": loss, **self.task.summarize(totals, samples), "samples": samples}

    def reset(self) -> None:
        self.losses, self.counts, self.values = [], [], {}

    def state_dict(self) -> dict[str, Any]:
        """Mid-window state, per batch, so a resumed run logs bit-identical window values."""
        return {
            "losses": [loss.cpu() for loss in self.losses],
            "counts": list(self.counts),
            "values": {k: [v.cpu() for v in values] for k, values in self.values.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.losses = list(state["losses"])
        self.counts = list(state["counts"])
        self.values = {k: list(batches) for k, batches in state["values"].items()}


def _stack(tensors: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    return torch.stack([t.to(device) for t in tensors])


if __name__ == "__main__":

    class Accuracy:  # any object with the three metric methods of src.task.base.Task will do
        def batch_values(self, outputs: torch.Tensor, batch: Any) -> dict[str, torch.Tensor]:
            return {"correct": (outputs.argmax(1) == batch[1]).sum()}

        def reduce(self, values: dict[str, list[torch.Tensor]]) -> dict[str, torch.Tensor]:
            return {k: torch.stack(v).sum() for k, v in values.items()}

        def summarize(self, totals: dict[str, Any], samples: int) -> dict[str, float]:
            return {"acc": totals["correct"] / samples}

    meter = Meter(Accuracy())  # type: ignore[arg-type]
    for _ in range(3):
        meter.update(torch.tensor(0.5), torch.eye(2), (torch.zeros(2, 1), torch.tensor([0, 1])), 2)
    print(meter.compute(), "(3 batches of 2, all correct)")
