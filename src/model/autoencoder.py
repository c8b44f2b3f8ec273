"""A small convolutional autoencoder: two stride-2 convs down to a code vector, and back up.

The output goes through a sigmoid, so it lives where [0, 1] pixels do (`data.mean=0
data.std=1`, as the reconstruction task sets them).
"""

from __future__ import annotations

import torch
from torch import nn


class ConvAutoencoder(nn.Module):
    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 28,
        channels: list[int] | tuple[int, ...] = (16, 32),
        code_size: int = 32,
    ) -> None:
        super().__init__()
        side = image_size // 2 ** len(channels)
        if side < 1 or side * 2 ** len(channels) != image_size:
            raise ValueError(
                f"image_size {image_size} must be a multiple of {2 ** len(channels)} "
                f"({len(channels)} stride-2 convolutions)"
            )
        down: list[nn.Module] = []
        width = in_channels
        for out in channels:
            down += [nn.Conv2d(width, out, 3, stride=2, padding=1), nn.ReLU(inplace=True)]
            width = out
        self.encoder = nn.Sequential(*down, nn.Flatten(), nn.Linear(width * side * side, code_size))
        up: list[nn.Module] = []
        for out in [*reversed(channels[:-1]), in_channels]:
            up += [nn.ConvTranspose2d(width, out, 4, stride=2, padding=1), nn.ReLU(inplace=True)]
            width = out
        up[-1] = nn.Sigmoid()  # the last layer makes pixels, not features
        self.decoder = nn.Sequential(
            nn.Linear(code_size, channels[-1] * side * side),
            nn.ReLU(inplace=True),
            nn.Unflatten(1, (channels[-1], side, side)),
            *up,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


if __name__ == "__main__":
    model = ConvAutoencoder()
    out = model(torch.rand(4, 1, 28, 28))
    params = sum(p.numel() for p in model.parameters())
    print(f"ConvAutoencoder: (4, 1, 28, 28) -> {tuple(out.shape)}, {params:,} parameters")
