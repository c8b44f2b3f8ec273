"""Turn raw batches into model input: dtype, scale, normalisation, channel axis.

Data stays uint8 in memory (4x smaller than float32) and is converted one batch at a time,
wherever the data lives: on a GPU when the loader keeps its tensors there.
"""

from __future__ import annotations

import torch


class NormalizeImages:
    """uint8 images (B, H, W) -> float32 (B, 1, H, W) standardised; labels -> int64."""

    def __init__(self, mean: float, std: float) -> None:
        # (x / 255 - mean) / std  ==  x * scale + shift, two fused-friendly ops per batch.
        self.scale = 1.0 / (255.0 * std)
        self.shift = -mean / std

    def __call__(
        self, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        inputs = images.unsqueeze(1).float().mul_(self.scale).add_(self.shift)
        return inputs, labels.long()


if __name__ == "__main__":
    collate = NormalizeImages(mean=0.5, std=0.25)
    x, y = collate(torch.randint(0, 256, (4, 28, 28), dtype=torch.uint8), torch.arange(4))
    print(tuple(x.shape), x.dtype, y.dtype)
