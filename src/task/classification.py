"""Classification: cross-entropy on logits, accuracy (top-1) as the metric.

Batches are `(inputs, targets)` pairs or dicts with `input_key` / `target_key`; `inputs` is
whatever the model reads (images, a padded sequence batch, ...), `targets` int64 class indices.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from src.task.base import Task, inputs_and_targets


class Classification(Task):
    metric_names = ("loss", "acc")

    def __init__(
        self, label_smoothing: float = 0.0, input_key: str = "inputs", target_key: str = "targets"
    ) -> None:
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.keys = (input_key, target_key)

    def loss(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, targets = inputs_and_targets(batch, *self.keys)
        logits = model(inputs)
        return self.criterion(logits, targets), logits

    def batch_values(self, logits: torch.Tensor, batch: Any) -> dict[str, torch.Tensor]:
        # One op per step; comparing with the targets waits for `reduce`, once per window.
        _, targets = inputs_and_targets(batch, *self.keys)
        return {"predicted": logits.argmax(dim=1), "target": targets}

    def reduce(self, values: Mapping[str, list[torch.Tensor]]) -> dict[str, torch.Tensor]:
        hits = torch.cat(values["predicted"]) == torch.cat(values["target"])
        return {"correct": hits.sum()}

    def summarize(self, totals: Mapping[str, Any], samples: int) -> dict[str, float]:
        return {"acc": totals.get("correct", 0.0) / max(samples, 1)}

    @torch.no_grad()
    def predict(self, model: nn.Module, inputs: torch.Tensor) -> list[dict[str, Any]]:
        probabilities = torch.softmax(model(inputs).float(), dim=1)
        top, label = probabilities.max(dim=1)
        return [{"class": int(c), "probability": round(float(p), 6)} for p, c in zip(top, label)]


if __name__ == "__main__":
    task = Classification()
    model = nn.Linear(4, 3)
    batch = (torch.randn(8, 4), torch.randint(0, 3, (8,)))
    meter = task.metrics()
    loss, logits = task.loss(model, batch)
    meter.update(loss, logits, batch, task.batch_size(batch))
    print(task.metric_names, meter.compute(), task.predict(model, batch[0][:2]))
