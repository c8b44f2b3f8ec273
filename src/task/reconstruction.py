"""Reconstruction: the model gives back its input (an autoencoder), optionally from a noisy copy.

Batches are images alone, `(images, anything)` pairs (the labels of a classification dataset
are ignored) or dicts with `input_key`. Pixels are expected in [0, `data_range`]: the task's yaml
sets the data's mean 0 and std 1. Metrics: `mse` (mean squared error per pixel) and `psnr`
(peak signal-to-noise ratio in dB, per image, averaged), besides the training loss.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from enum import Enum
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from src.task.base import Task

PSNR_CAP_DB = 100.0  # a perfect reconstruction has an infinite PSNR; cap it to keep means finite


class ReconstructionLoss(str, Enum):
    mse = "mse"  # squared error: the PSNR's own measure
    l1 = "l1"  # absolute error: sharper images, less sensitive to outliers


class Reconstruction(Task):
    metric_names = ("loss", "mse", "psnr")

    def __init__(
        self,
        loss: ReconstructionLoss | str = ReconstructionLoss.mse,
        noise_std: float = 0.0,
        data_range: float = 1.0,
        input_key: str = "inputs",
    ) -> None:
        self.criterion = F.l1_loss if ReconstructionLoss(loss) == "l1" else F.mse_loss
        self.noise_std, self.data_range, self.input_key = noise_std, data_range, input_key

    def clean_inputs(self, batch: Any) -> torch.Tensor:
        if isinstance(batch, torch.Tensor):
            return batch
        if isinstance(batch, Mapping):
            return batch[self.input_key]
        return batch[0]

    def loss(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        clean = self.clean_inputs(batch)
        noisy = clean
        if self.noise_std > 0 and model.training:  # a denoising autoencoder learns from noise
            noisy = clean + self.noise_std * torch.randn_like(clean)
        output = model(noisy)
        return self.criterion(output, clean), output

    def batch_values(self, output: torch.Tensor, batch: Any) -> dict[str, torch.Tensor]:
        error = F.mse_loss(output.float(), self.clean_inputs(batch).float(), reduction="none")
        return {"image_mse": error.flatten(1).mean(1)}  # per image; PSNR waits for `reduce`

    def reduce(self, values: Mapping[str, list[torch.Tensor]]) -> dict[str, torch.Tensor]:
        image_mse = torch.cat(values["image_mse"]).double()
        return {"mse": image_mse.sum(), "psnr": psnr(image_mse, self.data_range).sum()}

    def summarize(self, totals: Mapping[str, Any], samples: int) -> dict[str, float]:
        n = max(samples, 1)
        return {"mse": totals.get("mse", math.nan) / n, "psnr": totals.get("psnr", math.nan) / n}

    @torch.no_grad()
    def predict(self, model: nn.Module, inputs: torch.Tensor) -> list[dict[str, Any]]:
        """How well each image is reconstructed: a high error marks an unusual image."""
        errors = self.batch_values(model(inputs), inputs)["image_mse"].double()
        return [
            {"mse": round(float(e), 8), "psnr": round(float(p), 4)}
            for e, p in zip(errors, psnr(errors, self.data_range))
        ]


def psnr(mse: torch.Tensor, data_range: float) -> torch.Tensor:
    """10 log10(range^2 / mse) in dB, per element, capped at PSNR_CAP_DB."""
    ratio = (data_range**2) / mse.clamp_min(1e-30)
    return (10 * torch.log10(ratio)).clamp_max(PSNR_CAP_DB)


if __name__ == "__main__":
    from src.model.autoencoder import ConvAutoencoder

    task, model = Reconstruction(noise_std=0.2), ConvAutoencoder()
    images = torch.rand(8, 1, 28, 28)
    meter = task.metrics()
    loss, output = task.loss(model, images)
    meter.update(loss, output, images, task.batch_size(images))
    print(task.metric_names, meter.compute(), task.predict(model.eval(), images[:1]))
