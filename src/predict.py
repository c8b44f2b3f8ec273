"""Predict with a trained checkpoint: one line per input, and a CSV.

    python -m src.predict ckpt=<file.pt> input=<image or folder> [out=<file.csv>] [device=cpu]
    make predict CKPT=<file.pt> INPUT=<image or folder>

The model and the task are rebuilt from the config stored in the checkpoint (as `src.eval`
does); what a prediction is belongs to the task (a class and its probability for
classification), and what an input looks like belongs to the data the model was trained on,
recorded in the checkpoint (`data_info`: channels, image size, mean and std for images). Any
image PIL reads (PNG, JPEG, ...; any size, colour or not, 8 or 16 bits) is converted to that
input. Images may come from anywhere: files that are not images, are broken, or have more than
`predict.max_pixels` pixels (a decompression bomb) are skipped with one line each, unread. The
CSV goes to `<run dir>/predict/<checkpoint name>/<input name>.csv` unless `out=` says otherwise, so
predictions of different checkpoints or inputs never replace each other.
"""

from __future__ import annotations

import csv
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from src.common.args import key_values
from src.common.files import atomic_open
from src.config.schema import PredictConfig
from src.eval import Trained, load_trained
from src.launch.cli import run_script
from src.training.checkpoint import CheckpointError, run_dir_of

USAGE = (
    "usage: python -m src.predict ckpt=<file.pt> input=<image or folder> [out=<file.csv>] "
    "[predict.max_pixels=N]"
)
SIXTEEN_BIT = {"I;16", "I;16B", "I;16L", "I;16N", "I"}  # grey modes PIL's "L" would clip at 255


def parse_args(argv: list[str]) -> tuple[Path, Path, Path | None, int, list[str]]:
    pairs, unknown = key_values(argv)
    if unknown or not {"ckpt", "input"} <= set(pairs):
        raise CheckpointError(USAGE)
    out = Path(pairs.pop("out")) if "out" in pairs else None
    ckpt, source = Path(pairs.pop("ckpt")), Path(pairs.pop("input"))
    cap = pairs.pop("predict.max_pixels", str(PredictConfig.max_pixels))
    if not cap.isdigit() or int(cap) < 1:
        raise CheckpointError(f"predict.max_pixels must be a positive integer (got {cap})")
    return ckpt, source, out, int(cap), [f"{k}={v}" for k, v in pairs.items()]


def input_files(source: Path) -> list[Path]:
    if source.is_file():
        return [source]
    if source.is_dir():
        return sorted(p for p in source.iterdir() if p.is_file() and not p.name.startswith("."))
    raise CheckpointError(f"input={source}: no such file or folder")


class ImageReader:
    """Image files -> the model's input, as the data module made it during training."""

    def __init__(self, info: dict[str, Any], max_pixels: int = PredictConfig.max_pixels) -> None:
        if "image_size" not in info:
            raise CheckpointError(
                "this checkpoint's data has no image input (data_info has no image_size): "
                "predict reads image files"
            )
        try:  # data_info comes from a file: check it before trusting it
            self.side, self.channels = int(info["image_size"]), int(info.get("in_channels", 1))
            mean = torch.tensor(info.get("mean", 0.0), dtype=torch.float32).reshape(-1, 1, 1)
            std = torch.tensor(info.get("std", 1.0), dtype=torch.float32).reshape(-1, 1, 1)
            shape = (self.channels, 1, 1)
            self.mean, self.std = mean.expand(shape), std.expand(shape)
        except (TypeError, ValueError, RuntimeError) as err:
            raise CheckpointError(f"this checkpoint's data_info is not usable: {err}") from err
        if not (0 < self.side * self.side <= max_pixels and self.channels in (1, 3)):
            raise CheckpointError(
                f"this checkpoint's data_info asks for {self.channels} channels of "
                f"{self.side}x{self.side} pixels: predict reads 1 or 3 channels, at most "
                f"predict.max_pixels={max_pixels}"
            )
        self.max_pixels = max_pixels
        Image.MAX_IMAGE_PIXELS = max_pixels  # PIL refuses to even open anything larger

    def read(self, path: Path) -> torch.Tensor | None:
        """(1, C, H, W) float32, or None (after one line saying why) for a file that is not an
        image, is broken, or is larger than max_pixels."""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(path) as image:
                    width, height = image.size
                    if width * height > self.max_pixels:
                        raise Image.DecompressionBombError(f"{width}x{height}")
                    pixels = self._pixels(image)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            print(
                f"skipped {path}: more than predict.max_pixels={self.max_pixels} pixels "
                "(a decompression bomb, or raise the cap)"
            )
            return None
        except (UnidentifiedImageError, OSError, ValueError) as err:
            reason = "not an image" if isinstance(err, UnidentifiedImageError) else str(err)
            print(f"skipped {path}: {reason}")
            return None
        return ((pixels - self.mean) / self.std).unsqueeze(0)

    def _pixels(self, image: Image.Image) -> torch.Tensor:
        """(C, side, side) float32 in [0, 1]; 16-bit grey keeps its full range."""
        if image.mode in SIXTEEN_BIT:
            grey = Image.fromarray(np.asarray(image, dtype=np.float32) / 65535.0, mode="F")
            values = torch.from_numpy(np.array(self._resized(grey), dtype=np.float32))
            return values.unsqueeze(0).expand(self.channels, -1, -1)
        converted = self._resized(image.convert("L" if self.channels == 1 else "RGB"))
        values = torch.from_numpy(np.array(converted, dtype=np.uint8))  # a writable copy
        values = values.unsqueeze(0) if values.ndim == 2 else values.permute(2, 0, 1)
        return values.float() / 255.0

    def _resized(self, image: Image.Image) -> Image.Image:
        if image.size == (self.side, self.side):
            return image
        return image.resize((self.side, self.side), Image.Resampling.BILINEAR)


@torch.no_grad()
def predict(
    trained: Trained, source: Path, max_pixels: int = PredictConfig.max_pixels
) -> list[dict[str, Any]]:
    reader = ImageReader(trained.data_info, max_pixels)
    rows = []
    for path in input_files(source):
        inputs = reader.read(path)
        if inputs is None:
            continue
        inputs = trained.task.to_device(inputs, trained.device)
        (row,) = trained.task.predict(trained.model, inputs)
        rows.append({"file": str(path), **row})
        print("  ".join(str(v) for v in rows[-1].values()))
    if not rows:
        raise CheckpointError(f"input={source}: no readable images")
    return rows


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with atomic_open(path, "w") as handle:
        writer = csv.DictWriter(handle, list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def default_out(ckpt: Path, source: Path) -> Path:
    """One file per (checkpoint, input): `best.pt` and `step-*.pt`, or two folders, never clash."""
    folder = (run_dir_of(ckpt) or ckpt.resolve().parent) / "predict" / ckpt.stem
    return folder / f"{source.resolve().stem or 'root'}.csv"


def main(argv: list[str]) -> list[dict[str, Any]]:
    ckpt, source, out, max_pixels, overrides = parse_args(argv)
    trained = load_trained(ckpt, overrides)
    try:
        rows = predict(trained, source, max_pixels)
    except NotImplementedError as err:  # the task has no prediction to make
        raise CheckpointError(str(err)) from err
    out = out or default_out(ckpt, source)
    write_csv(out, rows)
    print(f"{len(rows)} predictions -> {out}")
    return rows


if __name__ == "__main__":
    run_script(main, logging.WARNING)
