"""MNIST (and FashionMNIST) as in-memory tensors and loaders.

torchvision's dataset classes read the raw IDX files; everything after that is tensor slicing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torchvision.datasets import MNIST

from src.data.collate import NormalizeImages
from src.data.in_memory import InMemoryLoader, split_train_val
from src.data.loaders import Loaders
from src.data.prepare import MNIST_MD5, prepare_raw_files

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081  # of [0, 1] pixels over the 60k training images


def load_tensors(
    dataset_cls: Any, root: str | Path, train: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode a split once into uint8 images (N, 28, 28) and int64 labels (N,)."""
    dataset = dataset_cls(str(root), train=train, download=False)
    return dataset.data, dataset.targets


def build_loaders(
    root: str,
    batch_size: int,
    eval_batch_size: int,
    val_size: int,
    split_seed: int,
    download: bool = True,
    verify_md5: bool = True,
    mean: float = MNIST_MEAN,
    std: float = MNIST_STD,
    folds: int = 0,
    fold: int = 0,
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
    rank: int = 0,
    world_size: int = 1,
    dataset_cls: Any = MNIST,
    md5: dict[str, str] | None = MNIST_MD5,
) -> Loaders:
    """Prepare the files, decode them once, and cut train/val/test loaders from the tensors;
    validation is `val_size` training images, or fold `fold` of `folds` (K-fold)."""
    prepare_raw_files(dataset_cls, root, md5 if verify_md5 else None, download)
    train_x, train_y = load_tensors(dataset_cls, root, train=True)
    test_x, test_y = load_tensors(dataset_cls, root, train=False)
    (train_x, train_y), (val_x, val_y) = split_train_val(
        train_x, train_y, val_size, split_seed, folds, fold
    )
    if torch.device(device).type == "cuda":  # 55 MB of uint8: live on the GPU, no copies per step
        train_x, train_y, val_x, val_y, test_x, test_y = (
            t.to(device) for t in (train_x, train_y, val_x, val_y, test_x, test_y)
        )
    collate = NormalizeImages(mean, std)

    def loader(x: torch.Tensor, y: torch.Tensor, batch: int, shuffle: bool) -> InMemoryLoader:
        return InMemoryLoader(
            x, y, batch, collate, shuffle=shuffle, seed=seed, rank=rank, world_size=world_size
        )

    side = int(train_x.shape[-1])
    info: dict[str, Any] = {"num_classes": len(dataset_cls.classes), "in_channels": 1}
    info |= {"image_size": side, "in_features": side * side, "mean": mean, "std": std}
    return Loaders(
        train=loader(train_x, train_y, batch_size, shuffle=True),
        val=loader(val_x, val_y, eval_batch_size, shuffle=False),
        test=loader(test_x, test_y, eval_batch_size, shuffle=False),
        info=info,
    )


if __name__ == "__main__":
    loaders = build_loaders("data", 256, 1000, 5000, 0)
    x, y = next(iter(loaders.train))
    print(f"train batches {len(loaders.train)}, batch {tuple(x.shape)} {x.dtype}, {loaders.info}")
