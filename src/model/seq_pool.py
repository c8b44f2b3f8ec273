"""A small sequence classifier for padded batches: per-step MLP, masked mean, linear head.

It takes `inputs = (values, mask)` (a `PaddedBatch` from src/data/sequences.py, or any pair):
values (B, T, F), mask (B, T) True on real steps. Padded steps are excluded from the mean, so
the output does not depend on how much padding a batch has.
"""

from __future__ import annotations

import torch
from torch import nn


class SeqPool(nn.Module):
    def __init__(self, in_features: int = 1, hidden: int = 64, num_classes: int = 2) -> None:
        super().__init__()
        self.step = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(inplace=True))
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, inputs: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        values, mask = inputs
        features = self.step(values)  # (B, T, hidden)
        weights = mask.unsqueeze(-1).to(features.dtype)
        pooled = (features * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        return self.head(pooled)


if __name__ == "__main__":
    values = torch.randn(3, 7, 1)
    mask = torch.arange(7).unsqueeze(0) < torch.tensor([[7], [4], [2]])
    print(f"SeqPool: values (3, 7, 1) + mask -> {tuple(SeqPool()((values, mask)).shape)}")
