"""Classify image files with a trained checkpoint: one line per image, and a CSV.

    python -m src.predict ckpt=<file.pt> input=<image or folder> [out=<file.csv>] [device=cpu]
    make predict CKPT=<file.pt> INPUT=<image or folder>

The model is rebuilt from the config stored in the checkpoint (as `src.eval` does). Any image
PIL reads (PNG, JPEG, ...; any size, colour or not) is converted to the training input: grey,
resized to the model's side, standardised with the data config's mean and std by the same
collate as training. Files that are not images are skipped with one line each. The CSV goes to
`<run dir>/predictions.csv` unless `out=` says otherwise.
"""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from PIL import Image, UnidentifiedImageError

from src.common.files import atomic_open
from src.data.collate import NormalizeImages
from src.data.mnist import MNIST_MEAN, MNIST_STD
from src.eval import load_trained_model
from src.launch.cli import run_script
from src.training.checkpoint import CheckpointError

USAGE = "usage: python -m src.predict ckpt=<file.pt> input=<image or folder> [out=<file.csv>]"


def parse_args(argv: list[str]) -> tuple[Path, Path, Path | None, list[str]]:
    pairs = dict(arg.split("=", 1) for arg in argv if "=" in arg)
    if any("=" not in arg for arg in argv) or not {"ckpt", "input"} <= set(pairs):
        raise CheckpointError(USAGE)
    out = Path(pairs.pop("out")) if "out" in pairs else None
    ckpt, source = Path(pairs.pop("ckpt")), Path(pairs.pop("input"))
    return ckpt, source, out, [f"{k}={v}" for k, v in pairs.items()]


def image_side(cfg: DictConfig) -> int:
    """The square input side the model was trained on, from its stored config."""
    model = cfg.model
    if "image_size" in model:
        return int(model.image_size)
    side = math.isqrt(int(model.get("in_features", 0)))
    if side < 1 or "root" not in cfg.data:
        raise CheckpointError(f"{model._target_} does not take images: predict handles images")
    return side


def input_files(source: Path) -> list[Path]:
    if source.is_file():
        return [source]
    if source.is_dir():
        return sorted(p for p in source.iterdir() if p.is_file() and not p.name.startswith("."))
    raise CheckpointError(f"input={source}: no such file or folder")


def read_image(path: Path, side: int) -> np.ndarray | None:
    """Grey uint8 (side, side), or None (after one line saying why) when it is not an image."""
    try:
        with Image.open(path) as image:
            grey = image.convert("L")
    except (UnidentifiedImageError, OSError) as err:
        reason = "not an image" if isinstance(err, UnidentifiedImageError) else str(err)
        print(f"skipped {path}: {reason}")
        return None
    if grey.size != (side, side):
        grey = grey.resize((side, side), Image.Resampling.BILINEAR)
    return np.asarray(grey, dtype=np.uint8)


@torch.no_grad()
def predict(ckpt: Path, source: Path, overrides: list[str]) -> list[dict[str, Any]]:
    cfg, model, device, _ = load_trained_model(ckpt, overrides)
    side = image_side(cfg)
    mean, std = cfg.data.get("mean", MNIST_MEAN), cfg.data.get("std", MNIST_STD)
    collate = NormalizeImages(mean, std, device)  # exactly the training conversion
    rows = []
    for path in input_files(source):
        pixels = read_image(path, side)
        if pixels is None:
            continue
        inputs, _ = collate(torch.from_numpy(pixels).unsqueeze(0), torch.zeros(1))
        probs = torch.softmax(model(inputs).float(), dim=1)[0]
        label = int(probs.argmax())
        rows.append({"file": str(path), "class": label, "probability": float(probs[label])})
        print(f"{path}  {label}  {float(probs[label]):.4f}")
    if not rows:
        raise CheckpointError(f"input={source}: no readable images")
    return rows


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with atomic_open(path, "w") as handle:
        writer = csv.DictWriter(handle, ["file", "class", "probability"], lineterminator="\n")
        writer.writeheader()
        writer.writerows({**row, "probability": f"{row['probability']:.6f}"} for row in rows)


def main(argv: list[str]) -> list[dict[str, Any]]:
    ckpt, source, out, overrides = parse_args(argv)
    rows = predict(ckpt, source, overrides)
    resolved = ckpt.resolve()
    run_dir = resolved.parent.parent if resolved.parent.name == "checkpoints" else resolved.parent
    out = out or run_dir / "predictions.csv"
    write_csv(out, rows)
    print(f"{len(rows)} predictions -> {out}")
    return rows


if __name__ == "__main__":
    run_script(main, logging.WARNING)
