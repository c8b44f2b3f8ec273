"""A multi-layer perceptron on flattened inputs: the smallest useful baseline."""

from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Module):
    def __init__(
        self,
        in_features: int = 784,
        hidden: list[int] | tuple[int, ...] = (256, 128),
        num_classes: int = 10,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            width = size
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


if __name__ == "__main__":
    model = MLP()
    logits = model(torch.randn(4, 1, 28, 28))
    print(f"MLP: input (4, 1, 28, 28) -> {tuple(logits.shape)}")
