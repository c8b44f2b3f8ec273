"""`data=image_folder`: a folder of one's own images -> loaders, through the decoded cache.

    scan the folder (image_files.py)  ->  decode once into a uint8 cache (image_cache.py)
    -> carve val/test with a fixed seed (or val as one fold of K: data.folds, data.fold)
    -> gather each batch from the cache (a copy of uint8 rows)
    -> augment + normalise it (augment.py): one batched pass, on the GPU when there is one;
       or per sample, torchvision v2 transforms in DataLoader workers (augment.mode=per_sample)

Batches are gathered in the training process by default (`data.loader.num_workers=0`): a
batch of 256 cached MNIST images takes ~0.05 ms to gather and ~1 ms to augment, less than a
worker's hand-over of it (~0.5 ms per tensor here). Workers pay off for per-sample transforms or
a cache larger than RAM. Decoding into the cache has its own workers (`data.decode_workers`).

The image size and channels are inferred when the config leaves them open, the normalisation
statistics are computed from the training images, and all of it reaches the model and the
checkpoints through `Loaders.info`.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from src.data.augment import AugmentMode, AugmentOptions, BatchImages, torchvision_transforms
from src.data.dataloader import DataLoaderOptions, KeyedDataset, OnDevice, SeededDataLoader
from src.data.folds import carve_validation
from src.data.idx import DataError
from src.data.image_cache import ImageCache, open_cache
from src.data.image_files import (
    SPLITS,
    TEST,
    TRAIN,
    VAL,
    CorruptFiles,
    FolderScan,
    probe_format,
    scan_folder,
)
from src.data.loaders import Loaders
from src.data.seeded import SampleKey

log = logging.getLogger(__name__)
DEFAULT_AUGMENT = AugmentOptions()  # never changed
DEFAULT_LOADER = DataLoaderOptions(num_workers=0)  # batches made in the training process
DECODE_WORKERS = 2  # processes decoding the files into the cache, once


class CachedImages(Dataset):
    """Some rows of the cache with their labels. `__getitems__` serves a batch of `SampleKey`s
    in one gather, as (uint8 images, int64 labels, (B, 2) keys); `__getitem__(i)` one sample,
    as (uint8 image, label), for per-sample transforms. The memmap opens in each process that
    reads it (it is never pickled to workers)."""

    def __init__(self, cache: ImageCache, rows: np.ndarray, labels: np.ndarray) -> None:
        self.path, self.shape = cache.images_path, cache.shape
        self.rows, self.labels = rows, torch.from_numpy(labels[rows])
        self._images: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def images(self) -> np.ndarray:
        if self._images is None:
            self._images = np.memmap(self.path, np.uint8, "r", shape=self.shape)
        return self._images

    def __getitems__(self, keys: list[SampleKey]) -> tuple[torch.Tensor, ...]:
        keyed = np.array(keys, dtype=np.int64).reshape(-1, 2)
        index = keyed[:, 1]
        images = torch.from_numpy(self.images[self.rows[index]])  # fancy indexing: a copy
        return images, self.labels[index], torch.from_numpy(keyed)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(np.array(self.images[self.rows[index]])), int(self.labels[index])

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_images": None}


class FinishBatch:
    """collate_fn of the batched path: `finish(images, labels, keys)` in the worker."""

    def __init__(self, finish: BatchImages) -> None:
        self.finish = finish

    def __call__(self, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.finish(*batch)


def build_loaders(
    root: str,
    batch_size: int,
    eval_batch_size: int,
    image_size: int | None = None,
    channels: int | None = None,
    val_size: float = 0.1,
    test_size: float = 0.1,
    split_seed: int = 0,
    folds: int = 0,
    fold: int = 0,
    mean: list[float] | None = None,
    std: list[float] | None = None,
    augment: Any = DEFAULT_AUGMENT,
    on_corrupt: CorruptFiles | str = CorruptFiles.refuse,
    cache_dir: str = "data/cache",
    decode_workers: int = DECODE_WORKERS,
    loader: Any = DEFAULT_LOADER,
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
    rank: int = 0,
    world_size: int = 1,
) -> Loaders:
    """Scan, cache, carve and load a folder of images (see the module docstring)."""
    options, augment = _as(DataLoaderOptions, loader), _as(AugmentOptions, augment)
    scan = scan_folder(root)
    if image_size is None or channels is None:
        inferred_side, inferred_channels = probe_format(scan)
        image_size, channels = image_size or inferred_side, channels or inferred_channels
    _check(channels, image_size, augment)
    cache = open_cache(scan, channels, image_size, cache_dir, decode_workers)
    usable = _usable(scan, cache, CorruptFiles(on_corrupt))
    rows = carve(scan, usable, val_size, test_size, split_seed)
    if folds:
        rows[TRAIN], rows[VAL] = carve_fold(scan, rows, folds, fold, split_seed)
    if len(rows[TRAIN]) < batch_size:
        raise DataError(
            f"{root}: {len(rows[TRAIN])} training images, fewer than data.batch_size={batch_size}"
        )
    stats = cache.channel_stats(rows[TRAIN])  # from per-image sums kept in the cache: cheap
    mean, std = list(mean or stats[0]), list(std or stats[1])
    sharding = {"rank": rank, "world_size": world_size, "options": options}
    splits = SplitLoaders(cache, scan.labels, rows, mean, std, seed, torch.device(device), sharding)
    return Loaders(
        train=splits.train(batch_size, augment),
        val=splits.batched(VAL, eval_batch_size, None),
        test=splits.batched(TEST, eval_batch_size, None),
        info=describe(scan, rows, channels, image_size, mean, std),
    )


def describe(
    scan: FolderScan,
    rows: dict[int, np.ndarray],
    channels: int,
    side: int,
    mean: list[float],
    std: list[float],
) -> dict[str, Any]:
    """The facts the model and `make predict` need (`Loaders.info`), logged with the splits."""
    info = {
        "num_classes": len(scan.classes),
        "in_channels": channels,
        "image_size": side,
        "in_features": channels * side * side,
        "mean": mean,
        "std": std,
        "classes": scan.classes,
    }
    sizes = ", ".join(f"{len(rows[s])} {SPLITS[s]}" for s in (TRAIN, VAL, TEST))
    shown = {k: v for k, v in info.items() if k != "classes"}
    log.info("%s: %s images; %s", scan.root, sizes, shown)
    return info


class SplitLoaders:
    """Loaders over the cache rows of each split, all normalised alike."""

    def __init__(
        self,
        cache: ImageCache,
        labels: np.ndarray,
        rows: dict[int, np.ndarray],
        mean: list[float],
        std: list[float],
        seed: int,
        device: torch.device,
        sharding: dict[str, Any],
    ) -> None:
        self.cache, self.labels, self.rows = cache, labels, rows
        self.mean, self.std, self.seed, self.device = mean, std, seed, device
        self.sharding = sharding  # rank, world_size and the DataLoader options

    def train(self, batch_size: int, augment: AugmentOptions) -> Any:
        if augment.mode == AugmentMode.batched:
            return self.batched(TRAIN, batch_size, augment)
        side = self.cache.shape[-1]
        transform = torchvision_transforms(side, self.mean, self.std, augment)
        data = KeyedDataset(self.images(TRAIN), transform, self.seed)
        return SeededDataLoader(
            data, batch_size, shuffle=True, seed=self.seed, device=self.device, **self.sharding
        )

    def batched(self, split: int, batch_size: int, augment: AugmentOptions | None) -> Any:
        """Batches gathered from the cache (in the workers, if any) and finished (augmented,
        normalised) in the same process on a CPU machine, or on the device after an
        asynchronous copy of the uint8 pixels."""
        finish = BatchImages(self.mean, self.std, augment, self.seed)
        common = {"shuffle": split == TRAIN, "seed": self.seed, **self.sharding}
        if self.device.type == "cpu":
            return SeededDataLoader(
                self.images(split), batch_size, collate_fn=FinishBatch(finish), **common
            )
        raw = SeededDataLoader(
            self.images(split), batch_size, collate_fn=_as_is, device=self.device, **common
        )
        return OnDevice(raw, self.device, finish, keep_on_cpu=(2,))

    def images(self, split: int) -> CachedImages:
        return CachedImages(self.cache, self.rows[split], self.labels)


def carve(
    scan: FolderScan, usable: np.ndarray, val_size: float, test_size: float, split_seed: int
) -> dict[int, np.ndarray]:
    """Rows of each split. A split without its own folder is drawn from the training pool with
    a generator seeded by `split_seed`: `size` < 1 is a fraction of the pool, >= 1 a count."""
    rows = {s: np.flatnonzero(usable & (scan.splits == s)) for s in (TRAIN, VAL, TEST)}
    pool = rows[TRAIN]
    order = pool[torch.randperm(len(pool), generator=torch.Generator().manual_seed(split_seed))]
    begin = 0
    for split, size, key in ((VAL, val_size, "val_size"), (TEST, test_size, "test_size")):
        if split in scan.split_folders:
            continue
        count = round(size * len(pool)) if size < 1 else int(size)
        if begin + count >= len(pool):
            raise DataError(
                f"data.{key}={size} leaves no training images out of {len(pool)} in {scan.root}"
            )
        rows[split] = np.sort(order[begin : begin + count])
        begin += count
    rows[TRAIN] = np.sort(order[begin:])
    return rows


def carve_fold(
    scan: FolderScan, rows: dict[int, np.ndarray], folds: int, fold: int, split_seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """K-fold: the rows of `carve`'s train and val, cut into `folds` folds; fold `fold`
    validates. The test rows stay those of the plain carve, so every fold tests alike."""
    if VAL in scan.split_folders:
        raise DataError(
            f"data.folds={folds} needs validation carved from train, not {scan.root}/val"
        )
    pool = np.sort(np.concatenate([rows[TRAIN], rows[VAL]]))
    train, val = carve_validation(len(pool), 0, split_seed, folds, fold)
    return np.sort(pool[train.numpy()]), np.sort(pool[val.numpy()])


def _usable(scan: FolderScan, cache: ImageCache, policy: CorruptFiles) -> np.ndarray:
    """Which files to use: all, unless some did not decode (refused, or left out and counted)."""
    usable = np.ones(len(scan.files), dtype=bool)
    if not cache.corrupt:
        return usable
    first = min(cache.corrupt)
    where = f"{scan.files[first]} is not a readable image ({cache.corrupt[first]})"
    more = len(cache.corrupt) - 1
    if policy == CorruptFiles.refuse:
        others = f", and {more} more file(s) neither" if more else ""
        raise DataError(f"{where}{others}; set data.on_corrupt=skip to leave such files out")
    log.warning("skipping %d corrupt image file(s); the first: %s", len(cache.corrupt), where)
    usable[list(cache.corrupt)] = False
    return usable


def _check(channels: int, image_size: int, augment: AugmentOptions) -> None:
    problems = augment.problems()
    if channels not in (1, 3):
        problems.insert(0, f"data.channels must be 1 or 3 (got {channels})")
    if image_size < 1:
        problems.insert(0, f"data.image_size must be >= 1 (got {image_size})")
    if problems:
        raise DataError("invalid config: " + "; ".join(problems))


def _as(cls: type, value: Any) -> Any:
    """A fresh dataclass from another one or from a mapping of its fields (a config node)."""
    if isinstance(value, Mapping):
        return cls(**value)
    return cls(**{f.name: getattr(value, f.name) for f in dataclasses.fields(cls)})


def _as_is(batch: Any) -> Any:
    return batch


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stdout)
    loaders = build_loaders(sys.argv[1], 256, 1000)
    x, y = next(iter(loaders.train))
    print(f"{len(loaders.train)} batches of {tuple(x.shape)} {x.dtype}; info {loaders.info}")
