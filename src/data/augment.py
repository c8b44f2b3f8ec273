"""Image augmentation: one batched pass per batch, or torchvision v2 transforms per sample.

`BatchImages` finishes a batch of uint8 images (B, C, S, S) in a handful of tensor operations,
wherever the batch lives (in a DataLoader worker on a CPU machine, on the GPU otherwise):

    random resized crop + flips    one affine_grid + grid_sample with a matrix per sample
    colour jitter                  brightness, contrast, saturation: per-sample factors
    normalisation                  (x / 255 - mean) / std, per channel

Every random number is `sample_uniforms(seed, epoch, index)`: a pure function of the sample,
never of the batch or rank it lands in, so a resumed or a DDP run sees the same pixels.
`torchvision_transforms` builds the per-sample torchvision v2 pipeline with the same meaning,
for `mode=per_sample` and for comparisons.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from src.data.seeded import sample_uniforms

GREY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights
# Which uniform draw of a sample drives which choice (fixed, so a choice never shifts another).
SCALE, RATIO, CENTER_X, CENTER_Y, HFLIP, VFLIP, BRIGHT, CONTRAST, SATURATE = range(9)
DRAWS = 9


class AugmentMode(str, Enum):
    batched = "batched"  # one pass over each batch (on the GPU when there is one)
    per_sample = "per_sample"  # torchvision v2 transforms per sample in the DataLoader workers


@dataclass
class AugmentOptions:
    """Random training augmentations; the names and meanings of torchvision v2's transforms
    (RandomResizedCrop's scale and ratio, the flips' p, ColorJitter's three factors). A
    crop_scale and crop_ratio of [1, 1] mean no crop."""

    crop_scale: list[float] = field(default_factory=lambda: [0.85, 1.0])  # crop area / image area
    crop_ratio: list[float] = field(default_factory=lambda: [0.9, 1.1])  # crop width / height
    hflip: float = 0.0  # probability of a horizontal flip (0.5 suits photos, not digits)
    vflip: float = 0.0  # probability of a vertical flip
    brightness: float = 0.0  # ColorJitter: factor drawn from [1 - b, 1 + b] (0 = off)
    contrast: float = 0.0  # ColorJitter: blend with the image's mean grey, [1 - c, 1 + c]
    saturation: float = 0.0  # ColorJitter: blend with the grey image, [1 - s, 1 + s]; RGB only
    mode: AugmentMode = AugmentMode.batched  # batched (fast) or per_sample (torchvision v2)

    def __post_init__(self) -> None:  # from a config node: plain lists and the Enum
        self.crop_scale, self.crop_ratio = list(self.crop_scale), list(self.crop_ratio)
        self.mode = AugmentMode(self.mode)

    def problems(self) -> list[str]:
        """What is out of range, as `data.augment.<key> ...` lines."""
        found = []
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            found.append(f"crop_scale must satisfy 0 < low <= high <= 1 (got {self.crop_scale})")
        lo, hi = self.crop_ratio
        if not 0 < lo <= hi:
            found.append(f"crop_ratio must satisfy 0 < low <= high (got {self.crop_ratio})")
        for name in ("hflip", "vflip"):
            if not 0 <= getattr(self, name) <= 1:
                found.append(f"{name} is a probability in [0, 1] (got {getattr(self, name)})")
        for name in ("brightness", "contrast", "saturation"):
            if getattr(self, name) < 0:
                found.append(f"{name} must be >= 0 (got {getattr(self, name)})")
        return [f"data.augment.{line}" for line in found]

    @property
    def crops(self) -> bool:
        return list(self.crop_scale) != [1.0, 1.0] or list(self.crop_ratio) != [1.0, 1.0]


class BatchImages:
    """(uint8 images, targets, sample keys) -> (normalised float32 images, targets).

    `augment=None` only normalises (evaluation). `keys` is the (B, 2) int64 tensor of
    (epoch, index) the sampler chose; it stays on the CPU, where the random draws are made."""

    def __init__(
        self,
        mean: list[float],
        std: list[float],
        augment: AugmentOptions | None = None,
        seed: int = 0,
    ) -> None:
        self.mean, self.std, self.augment, self.seed = mean, std, augment, seed
        self._constants: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(
        self, images: torch.Tensor, targets: torch.Tensor, keys: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = images.to(torch.float32, copy=True)  # the in-place ops below never touch `images`
        if self.augment is not None and len(keys):
            u = sample_uniforms(self.seed, int(keys[0, 0]), keys[:, 1].numpy(), DRAWS)
            x = self._geometry(x, u, self.augment)
            if self.augment.brightness or self.augment.contrast or self.augment.saturation:
                x = jitter(x.mul_(1 / 255), u, self.augment).mul_(255)
        scale, shift = self._scale_shift(x.device)
        return x.mul_(scale).add_(shift), targets.long()

    def _geometry(self, x: torch.Tensor, u: np.ndarray, options: AugmentOptions) -> torch.Tensor:
        if options.crops:  # one resampling pass does every crop (and flip) of the batch
            crops = torch.from_numpy(random_crops(u, options)).to(x.device, non_blocking=True)
            return F.grid_sample(
                x, crop_grid(crops, x.shape[-1]), "bilinear", "border", align_corners=False
            )
        if options.hflip:
            flip = torch.from_numpy(u[:, HFLIP] < options.hflip).to(x.device, non_blocking=True)
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        if options.vflip:
            flip = torch.from_numpy(u[:, VFLIP] < options.vflip).to(x.device, non_blocking=True)
            x = torch.where(flip[:, None, None, None], x.flip(-2), x)
        return x

    def _scale_shift(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(x / 255 - mean) / std == x * scale + shift: two in-place ops per batch."""
        if device not in self._constants:
            mean = torch.tensor(self.mean, dtype=torch.float32).reshape(1, -1, 1, 1)
            std = torch.tensor(self.std, dtype=torch.float32).reshape(1, -1, 1, 1)
            self._constants[device] = ((1 / (255 * std)).to(device), (-mean / std).to(device))
        return self._constants[device]


def random_crops(u: np.ndarray, options: AugmentOptions) -> np.ndarray:
    """(B, 4) float32 per-sample crops `(x scale, y scale, x shift, y shift)` in coordinates
    normalised to [-1, 1]: a random resized crop (area and aspect ratio drawn like
    torchvision's, clamped to the image instead of re-drawn), flipped by a negative scale."""
    lo, hi = options.crop_scale
    area = lo + (hi - lo) * u[:, SCALE]
    log_lo, log_hi = math.log(options.crop_ratio[0]), math.log(options.crop_ratio[1])
    ratio = np.exp(log_lo + (log_hi - log_lo) * u[:, RATIO])
    width = np.minimum(np.sqrt(area * ratio), 1.0)
    height = np.minimum(np.sqrt(area / ratio), 1.0)
    return np.stack(
        [
            width * np.where(u[:, HFLIP] < options.hflip, -1.0, 1.0),
            height * np.where(u[:, VFLIP] < options.vflip, -1.0, 1.0),
            (2 * u[:, CENTER_X] - 1) * (1 - width),
            (2 * u[:, CENTER_Y] - 1) * (1 - height),
        ],
        axis=1,
    ).astype(np.float32)


def crop_grid(crops: torch.Tensor, side: int) -> torch.Tensor:
    """The (B, side, side, 2) sampling grid of `grid_sample` for axis-aligned crops: what
    `affine_grid` makes of the matrices [[sx, 0, tx], [0, sy, ty]], at a fraction of its cost."""
    centres = torch.linspace(-1 + 1 / side, 1 - 1 / side, side, device=crops.device)
    sx, sy, tx, ty = (c.reshape(-1, 1, 1) for c in crops.unbind(1))
    gx = (sx * centres.reshape(1, 1, side) + tx).expand(-1, side, side)
    gy = (sy * centres.reshape(1, side, 1) + ty).expand(-1, side, side)
    return torch.stack((gx, gy), dim=-1)


def jitter(x: torch.Tensor, u: np.ndarray, options: AugmentOptions) -> torch.Tensor:
    """torchvision's ColorJitter formulas on [0, 1] images, with per-sample factors, applied
    in a fixed order (brightness, contrast, saturation) rather than a random one."""

    def factors(column: int, amount: float) -> torch.Tensor:
        low = max(0.0, 1 - amount)  # uniform in [max(0, 1 - amount), 1 + amount]
        f = (low + (1 + amount - low) * u[:, column]).astype(np.float32)
        return torch.from_numpy(f).to(x.device, non_blocking=True).reshape(-1, 1, 1, 1)

    if options.brightness:
        x = x.mul_(factors(BRIGHT, options.brightness)).clamp_(0, 1)
    if options.contrast:
        mean = grey(x).mean(dim=(-3, -2, -1), keepdim=True)
        x = torch.lerp(mean, x, factors(CONTRAST, options.contrast)).clamp_(0, 1)
    if options.saturation and x.shape[1] == 3:
        x = torch.lerp(grey(x), x, factors(SATURATE, options.saturation)).clamp_(0, 1)
    return x


def grey(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:
        return x
    weights = torch.tensor(GREY, dtype=x.dtype, device=x.device).reshape(1, 3, 1, 1)
    return (x * weights).sum(dim=1, keepdim=True)


def torchvision_transforms(
    size: int, mean: list[float], std: list[float], augment: AugmentOptions | None = None
) -> Any:
    """The same pipeline as torchvision v2 transforms, per sample, on uint8 (C, H, W) tensors
    (or PIL images): the per_sample mode and the baseline of `make bench`."""
    from torchvision.transforms import v2

    steps: list[Any] = []
    if augment is not None:
        if augment.crops:
            scale, ratio = tuple(augment.crop_scale), tuple(augment.crop_ratio)
            steps.append(v2.RandomResizedCrop(size, scale=scale, ratio=ratio, antialias=True))
        if augment.hflip:
            steps.append(v2.RandomHorizontalFlip(augment.hflip))
        if augment.vflip:
            steps.append(v2.RandomVerticalFlip(augment.vflip))
        if augment.brightness or augment.contrast or augment.saturation:
            steps.append(v2.ColorJitter(augment.brightness, augment.contrast, augment.saturation))
    steps += [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    return v2.Compose(steps)


if __name__ == "__main__":
    options = AugmentOptions(hflip=0.5, brightness=0.2)
    finish = BatchImages([0.5], [0.25], options, seed=0)
    images = torch.full((4, 1, 28, 28), 128, dtype=torch.uint8)
    keys = torch.tensor([[0, i] for i in range(4)])  # epoch 0, samples 0-3
    x, _ = finish(images, torch.arange(4), keys)
    print(f"batch {tuple(x.shape)} {x.dtype}; per-sample brightness: {x.mean((1, 2, 3))}")
    print(torchvision_transforms(28, [0.5], [0.25], options))
