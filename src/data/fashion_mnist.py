"""FashionMNIST: the MNIST pipeline (torchvision reads the IDX files, then tensor slicing) with
another dataset class and its own normalisation.

Files live in `<root>/FashionMNIST/raw/`. No official md5 of the uncompressed files is pinned
here (inventing one would be worse than none), so only torchvision's own checksum of the `.gz`
downloads applies; `verify_md5` has no effect for this dataset.
"""

from __future__ import annotations

import torch
from torchvision.datasets import FashionMNIST

from src.data import mnist

FASHION_MEAN, FASHION_STD = 0.2860, 0.3530
CLASSES = FashionMNIST.classes  # "T-shirt/top", "Trouser", ... "Ankle boot"


def build_loaders(
    root: str,
    batch_size: int,
    eval_batch_size: int,
    val_size: int,
    split_seed: int,
    download: bool = True,
    verify_md5: bool = False,
    mean: float = FASHION_MEAN,
    std: float = FASHION_STD,
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
    rank: int = 0,
    world_size: int = 1,
) -> mnist.Loaders:
    """Train/val/test loaders over FashionMNIST, cut from in-memory uint8 tensors."""
    return mnist.build_loaders(
        root,
        batch_size,
        eval_batch_size,
        val_size,
        split_seed,
        download,
        verify_md5=False,  # see the module docstring
        seed=seed,
        device=device,
        rank=rank,
        world_size=world_size,
        dataset_cls=FashionMNIST,
        md5=None,
        mean=mean,
        std=std,
    )


if __name__ == "__main__":
    loaders = build_loaders("data", 256, 1000, 5000, 0)
    x, y = next(iter(loaders.train))
    print(f"train batches {len(loaders.train)}, batch {tuple(x.shape)}, first: {CLASSES[y[0]]}")
