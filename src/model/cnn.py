"""A small convolutional classifier: conv blocks (conv, ReLU, 2x2 max-pool), then an MLP head."""

from __future__ import annotations

import torch
from torch import nn

from src.common.errors import InvalidValue


class CNN(nn.Module):
    """`len(channels)` conv blocks, each halving the image side, then hidden -> num_classes."""

    def __init__(
        self,
        in_channels: int = 1,
        channels: list[int] | tuple[int, ...] = (12, 32),
        kernel_sizes: list[int] | tuple[int, ...] = (5, 3),
        hidden: int = 256,
        num_classes: int = 10,
        image_size: int = 28,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if len(channels) != len(kernel_sizes):
            raise InvalidValue(f"{len(channels)} channels but {len(kernel_sizes)} kernel sizes")
        blocks: list[nn.Module] = []
        side, width = image_size, in_channels
        for out, k in zip(channels, kernel_sizes):
            blocks += [nn.Conv2d(width, out, k), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            side, width = (side - k + 1) // 2, out  # "valid" conv, then pool halves the side
        if side < 1:
            raise InvalidValue(f"image_size {image_size} is too small for kernels {kernel_sizes}")
        self.features = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(width * side * side, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


if __name__ == "__main__":
    model = CNN()
    logits = model(torch.randn(4, 1, 28, 28))
    params = sum(p.numel() for p in model.parameters())
    print(f"CNN: input (4, 1, 28, 28) -> {tuple(logits.shape)}, {params:,} parameters")
