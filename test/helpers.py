"""Synthetic data in the real formats, the overrides of a run that takes seconds, the CLI."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import forkserver
import numpy as np

from src.common.args import split_override
from src.data.idx import write_idx

REPO = Path(__file__).resolve().parents[1]


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of a CLI run: this repository importable, output unbuffered."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO), **extra}
    env.pop("HYDRA_FULL_ERROR", None)
    return env


def run_cli(
    *args: str,
    module: str = "src.main",
    timeout: float = 300,
    cwd: str | Path = REPO,
    env: dict[str, str] | None = None,
    fresh: bool = False,
    max_file_size: int = 0,
) -> subprocess.CompletedProcess:
    """Run the real command line (`python -m src.main ...`) in its own process (test/forkserver.py
    forks it from an interpreter that has already imported the project; `fresh`: not)."""
    env = cli_env(**(env or {}))
    proc = forkserver.start(module, list(args), cwd, env, fresh=fresh, max_file_size=max_file_size)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode or 0, out, err)


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


def with_overrides(base: list[str], *wanted: str) -> list[str]:
    """`base` without the keys `wanted` sets, then `wanted`: later values replace earlier ones."""
    keys = {split_override(o)[0] for o in wanted}
    return [*(o for o in base if split_override(o)[0] not in keys), *wanted]


def sweep_overrides(data_root: Path, sweep_dir: Path, *swept: str) -> list[str]:
    """`tiny_overrides` for a multirun below `sweep_dir`, plus the `swept` overrides."""
    run = tiny_overrides(data_root, sweep_dir)[:-1]  # without hydra.run.dir
    return with_overrides([*run, "runner.max_steps=6", f"hydra.sweep.dir={sweep_dir}"], *swept)


class BrokenModel:
    """A model whose constructor has a bug (`model._target_=helpers.BrokenModel`)."""

    def __init__(self, **kwargs: Any) -> None:
        self.size = len(kwargs) // 0  # ZeroDivisionError: a bug, not a user mistake


def write_image_folder(
    root: Path,
    classes: int = 3,
    per_class: int = 20,
    size: tuple[int, int] = (12, 12),
    mode: str = "L",
    suffix: str = ".png",
    seed: int = 0,
) -> Path:
    """Learnable images, one subfolder per class: class k lights up band k (and, in colour,
    channel k % 3), over noise; one in five shows another class's band, so the loss stays away
    from zero (where denormal floats would slow training down). `size` is (width, height)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    width, height = size
    channels = 3 if mode == "RGB" else 1
    for label in range(classes):
        folder = root / f"class_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        for n in range(per_class):
            pixels = rng.integers(0, 60, size=(height, width, channels)).astype(np.uint8)
            shown = label if rng.random() > 0.2 else int(rng.integers(0, classes))
            band = shown * height // classes
            pixels[band : band + max(1, height // classes), :, shown % channels] = 255
            image = Image.fromarray(pixels[..., 0] if channels == 1 else pixels)
            image.save(folder / f"{n:04d}{suffix}")
    return root
