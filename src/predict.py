"""Predict with a trained checkpoint: one line per input, and a CSV.

    python -m src.predict ckpt=<file.pt> input=<image or folder> [out=<file.csv>] [device=cpu]
    make predict CKPT=<file.pt> INPUT=<image or folder>

The model and the task are rebuilt from the config stored in the checkpoint (as `src.eval`
does); what a prediction is belongs to the task (a class and its probability for
classification), and what an input looks like belongs to the data the model was trained on,
recorded in the checkpoint (`data_info`: channels, image size, mean and std for images). Any
image PIL reads (PNG, JPEG, ...; any size, colour or not) is converted to that input. Files that
are not images are skipped with one line each. The CSV goes to `<run dir>/predictions.csv`
unless `out=` says otherwise.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from src.common.args import key_values
from src.common.files import atomic_open
from src.eval import Trained, load_trained
from src.launch.cli import run_script
from src.training.checkpoint import CheckpointError, run_dir_of

USAGE = "usage: python -m src.predict ckpt=<file.pt> input=<image or folder> [out=<file.csv>]"


def parse_args(argv: list[str]) -> tuple[Path, Path, Path | None, list[str]]:
    pairs, unknown = key_values(argv)
    if unknown or not {"ckpt", "input"} <= set(pairs):
        raise CheckpointError(USAGE)
    out = Path(pairs.pop("out")) if "out" in pairs else None
    ckpt, source = Path(pairs.pop("ckpt")), Path(pairs.pop("input"))
    return ckpt, source, out, [f"{k}={v}" for k, v in pairs.items()]


def input_files(source: Path) -> list[Path]:
    if source.is_file():
        return [source]
    if source.is_dir():
        return sorted(p for p in source.iterdir() if p.is_file() and not p.name.startswith("."))
    raise CheckpointError(f"input={source}: no such file or folder")


class ImageReader:
    """Image files -> the model's input, as the data module made it during training."""

    def __init__(self, info: dict[str, Any]) -> None:
        if "image_size" not in info:
            raise CheckpointError(
                "this checkpoint's data has no image input (data_info has no image_size): "
                "predict reads image files"
            )
        self.side, self.channels = int(info["image_size"]), int(info.get("in_channels", 1))
        shape = (1, self.channels, 1, 1)
        self.mean = torch.tensor(info.get("mean", 0.0), dtype=torch.float32).reshape(-1, 1, 1)
        self.std = torch.tensor(info.get("std", 1.0), dtype=torch.float32).reshape(-1, 1, 1)
        self.mean, self.std = self.mean.expand(shape[1:]), self.std.expand(shape[1:])

    def read(self, path: Path) -> torch.Tensor | None:
        """(1, C, H, W) float32, or None (after one line saying why) when it is not an image."""
        try:
            with Image.open(path) as image:
                converted = image.convert("L" if self.channels == 1 else "RGB")
        except (UnidentifiedImageError, OSError) as err:
            reason = "not an image" if isinstance(err, UnidentifiedImageError) else str(err)
            print(f"skipped {path}: {reason}")
            return None
        if converted.size != (self.side, self.side):
            converted = converted.resize((self.side, self.side), Image.Resampling.BILINEAR)
        pixels = torch.from_numpy(np.array(converted, dtype=np.uint8))
        pixels = pixels.unsqueeze(0) if pixels.ndim == 2 else pixels.permute(2, 0, 1)
        return ((pixels.float() / 255.0 - self.mean) / self.std).unsqueeze(0)


@torch.no_grad()
def predict(trained: Trained, source: Path) -> list[dict[str, Any]]:
    reader = ImageReader(trained.data_info)
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


def main(argv: list[str]) -> list[dict[str, Any]]:
    ckpt, source, out, overrides = parse_args(argv)
    trained = load_trained(ckpt, overrides)
    try:
        rows = predict(trained, source)
    except NotImplementedError as err:  # the task has no prediction to make
        raise CheckpointError(str(err)) from err
    out = out or (run_dir_of(ckpt) or ckpt.resolve().parent) / "predictions.csv"
    write_csv(out, rows)
    print(f"{len(rows)} predictions -> {out}")
    return rows


if __name__ == "__main__":
    run_script(main, logging.WARNING)
