"""FashionMNIST: the MNIST pipeline (torchvision reads the IDX files, then tensor slicing) with
another dataset class and its own normalisation.

Files live in `<root>/FashionMNIST/raw/`. No official md5 of the uncompressed files is pinned
here (inventing one would be worse than none), so only torchvision's own checksum of the `.gz`
downloads applies; `verify_md5` has no effect for this dataset.
"""

from __future__ import annotations

from typing import Any

from torchvision.datasets import FashionMNIST

from src.data import mnist
from src.data.loaders import Loaders

FASHION_MEAN, FASHION_STD = 0.2860, 0.3530  # of [0, 1] pixels over the 60k training images
CLASSES = FashionMNIST.classes  # "T-shirt/top", "Trouser", ... "Ankle boot"


def build_loaders(
    root: str,
    *,
    mean: float = FASHION_MEAN,
    std: float = FASHION_STD,
    **kwargs: Any,
) -> Loaders:
    """The MNIST loaders (same keyword arguments) over FashionMNIST's files and statistics."""
    kwargs["md5"] = None  # see the module docstring
    return mnist.build_loaders(root, mean=mean, std=std, dataset_cls=FashionMNIST, **kwargs)


if __name__ == "__main__":
    loaders = build_loaders(
        "data", batch_size=256, eval_batch_size=1000, val_size=5000, split_seed=0
    )
    x, y = next(iter(loaders.train))
    print(f"train batches {len(loaders.train)}, batch {tuple(x.shape)}, first: {CLASSES[y[0]]}")
