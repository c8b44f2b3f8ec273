"""Synthetic data in the real formats, and the overrides of a run that takes seconds."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from src.data.idx import write_idx


def synthetic_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Learnable 28x28 uint8 images: class k lights up horizontal band k, plus noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=n).astype(np.uint8)
    images = rng.integers(0, 60, size=(n, 28, 28)).astype(np.uint8)
    for i, label in enumerate(labels):
        row = 2 + 2 * int(label)
        images[i, row : row + 3, 4:24] = 255
    return images, labels


def write_mnist_like(
    root: Path, name: str = "MNIST", n_train: int = 600, n_test: int = 200
) -> Path:
    raw = root / name / "raw"
    train_x, train_y = synthetic_digits(n_train, seed=1)
    test_x, test_y = synthetic_digits(n_test, seed=2)
    write_idx(raw / "train-images-idx3-ubyte", train_x)
    write_idx(raw / "train-labels-idx1-ubyte", train_y)
    write_idx(raw / "t10k-images-idx3-ubyte", test_x)
    write_idx(raw / "t10k-labels-idx1-ubyte", test_y)
    return raw


def tiny_overrides(data_root: Path, run_dir: Path) -> list[str]:
    """A run on the synthetic data that finishes in a few seconds."""
    return [
        f"data.root={data_root}",
        "data.download=false",
        "data.verify_md5=false",
        "data.val_size=100",
        "data.batch_size=50",
        "data.eval_batch_size=100",
        "device=cpu",
        "runner.progress=log",
        "runner.log_every_n_steps=2",
        f"hydra.run.dir={run_dir}",
    ]
