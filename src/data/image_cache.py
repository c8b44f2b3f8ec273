"""The decoded-image cache: every file of a folder decoded once into one uint8 array on disk.

    data/cache/<root name>-<side>px-<channels>ch-<key>/
        images.u8     (N, C, S, S) uint8, read as a memmap: the data never has to fit in RAM
        index.npz     per image: decoded or corrupt, channel sums and sums of squares (statistics)
        meta.json     shape, classes, the files that did not decode and why

The key hashes the root, the file list with sizes and modification times, the side and the
channels: a changed folder gets a new cache (old ones can be deleted at any time). The first
process to need a cache takes a file lock and builds it in a hidden folder, renamed into place
when complete; DDP ranks and parallel trials that need it meanwhile wait on the lock, then read
the finished cache. A killed build leaves only a hidden folder, removed by the next build.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from src.data.idx import DataError
from src.data.image_files import FolderScan, decode

log = logging.getLogger(__name__)
VERSION = 1  # part of the key: a change in how files are decoded makes new caches
DECODED, CORRUPT, UNREADABLE = range(3)
DECODE_BATCH = 64  # files per DataLoader batch while building


@dataclass
class ImageCache:
    folder: Path
    shape: tuple[int, int, int, int]  # (N, C, S, S)
    corrupt: dict[int, str]  # index of a file that did not decode -> why
    sums: np.ndarray  # (N, C) float64: sum of the [0, 1] pixel values of each image
    squares: np.ndarray  # (N, C) float64: sum of their squares

    @property
    def images_path(self) -> Path:
        return self.folder / "images.u8"

    def channel_stats(self, rows: np.ndarray) -> tuple[list[float], list[float]]:
        """Per-channel mean and std of the pixels of the images at `rows`, from the sums."""
        pixels = len(rows) * self.shape[2] * self.shape[3]
        mean = self.sums[rows].sum(0) / pixels
        var = np.maximum(self.squares[rows].sum(0) / pixels - mean**2, 1e-12)
        return [round(float(m), 6) for m in mean], [round(float(s), 6) for s in np.sqrt(var)]


def open_cache(
    scan: FolderScan,
    channels: int,
    side: int,
    cache_dir: str | Path,
    workers: int,
    progress: bool = True,
) -> ImageCache:
    """The cache of these files at this size, built first if no process has built it yet."""
    cache_dir = Path(cache_dir)
    name = f"{scan.root.resolve().name}-{side}px-{channels}ch-{cache_key(scan, channels, side)}"
    folder = cache_dir / name
    if (folder / "meta.json").is_file():
        return load_cache(folder)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with file_lock(cache_dir / f".{folder.name}.lock"):
        if not (folder / "meta.json").is_file():  # nobody built it while we waited
            for stale in cache_dir.glob(f".{folder.name}.partial-*"):  # from a killed build
                shutil.rmtree(stale, ignore_errors=True)
            partial = cache_dir / f".{folder.name}.partial-{os.getpid()}"
            try:
                build_cache(scan, channels, side, partial, workers, progress)
                partial.rename(folder)
            finally:
                shutil.rmtree(partial, ignore_errors=True)
            _fsync_dir(cache_dir)
    return load_cache(folder)


def cache_key(scan: FolderScan, channels: int, side: int) -> str:
    """Hash of what the cache depends on: the root, every file's path below it, size and
    modification time, the side and the channels."""
    prefix = len(str(scan.root)) + 1
    lines = [f"{VERSION} {scan.root.resolve()} {channels} {side}"]
    lines += [f"{p[prefix:]}\0{size}\0{mtime}" for p, (size, mtime) in zip(scan.files, scan.stats)]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


def load_cache(folder: Path) -> ImageCache:
    meta = json.loads((folder / "meta.json").read_text())
    with np.load(folder / "index.npz") as index:  # plain arrays: no pickle is ever loaded
        sums, squares = index["sums"], index["squares"]
    corrupt = {int(i): why for i, why in meta["corrupt"].items()}
    n, channels, height, width = (int(v) for v in meta["shape"])
    return ImageCache(folder, (n, channels, height, width), corrupt, sums, squares)


def build_cache(
    scan: FolderScan,
    channels: int,
    side: int,
    folder: Path,
    workers: int,
    progress: bool,
) -> None:
    """Decode every file into `folder`, then write what the loaders read beside the pixels."""
    shape = (len(scan.files), channels, side, side)
    size = int(np.prod(shape))
    folder.mkdir(parents=True)
    free = shutil.disk_usage(folder).free
    if size > free:
        raise DataError(
            f"the decoded images need {size / 2**20:,.0f} MB but {folder.parent} has "
            f"{free / 2**20:,.0f} MB free: choose another data.cache_dir or a smaller "
            "data.image_size"
        )
    log.info(
        "decoding %d images from %s into %s (%.0f MB, once)",
        shape[0],
        scan.root,
        folder.parent,
        size / 2**20,
    )
    images = np.memmap(folder / "images.u8", np.uint8, "w+", shape=shape)
    sums, squares, corrupt = decode_into(images, scan, workers, progress)
    images.flush()
    del images
    np.savez(folder / "index.npz", sums=sums, squares=squares)
    meta = {
        "version": VERSION,
        "root": str(scan.root.resolve()),
        "shape": list(shape),
        "classes": scan.classes,
        "corrupt": {str(i): why for i, why in corrupt.items()},
    }
    (folder / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    for name in ("images.u8", "index.npz", "meta.json"):
        _fsync_file(folder / name)


def decode_into(
    images: np.ndarray, scan: FolderScan, workers: int, progress: bool
) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
    """Fill `images` (N, C, S, S) in file order, decoding in `workers` DataLoader worker
    processes (decoding, unlike reading the cache, is worth a process); return the channel sums
    and sums of squares of each image, and the files that did not decode. An unreadable file
    stops it."""
    n, channels, side, _ = images.shape
    sums, squares = np.zeros((n, channels)), np.zeros((n, channels))
    corrupt: dict[int, str] = {}
    loader = DataLoader(
        _DecodeFiles(scan.files, channels, side),
        batch_size=DECODE_BATCH,
        num_workers=workers,
        collate_fn=_collate_decoded,
        generator=torch.Generator(),  # whether a cache is built never moves the run's RNG
    )
    started = time.perf_counter()
    bar_on = progress and sys.stderr.isatty()  # a bar on a terminal, never in captured logs
    with tqdm(total=n, unit="img", desc="decoding", disable=not bar_on, leave=False) as bar:
        begin = 0
        for pixels, status, batch_sums, batch_squares, reasons in loader:
            end = begin + len(status)
            images[begin:end] = pixels.numpy()
            sums[begin:end], squares[begin:end] = batch_sums.numpy(), batch_squares.numpy()
            for offset, code in enumerate(status.tolist()):
                if code == UNREADABLE:
                    raise DataError(f"cannot read {scan.files[begin + offset]}: {reasons[offset]}")
                if code == CORRUPT:
                    corrupt[begin + offset] = reasons[offset]
            bar.update(end - begin)
            begin = end
    seconds = time.perf_counter() - started
    log.info("decoded %d images in %.1f s (%.0f images/s)", n, seconds, n / max(seconds, 1e-9))
    return sums, squares, corrupt


class _DecodeFiles(Dataset):
    """One file -> (pixels, status, channel sums, channel squares, reason) in a worker."""

    def __init__(self, files: list[str], channels: int, side: int) -> None:
        self.files, self.channels, self.side = files, channels, side

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int, str]:
        empty = np.zeros((self.channels, self.side, self.side), np.uint8)
        try:
            with open(self.files[index], "rb") as handle:
                data = handle.read()
        except OSError as err:
            return empty, UNREADABLE, err.strerror or str(err)
        try:
            return decode(data, self.channels, self.side), DECODED, ""
        except UnidentifiedImageError:
            return empty, CORRUPT, "not a known image format"
        except Exception as err:  # PIL raises many types for bad bytes: all mean "corrupt"
            return empty, CORRUPT, (str(err).splitlines() or [type(err).__name__])[0]


def _collate_decoded(items: list[tuple[np.ndarray, int, str]]) -> tuple[Any, ...]:
    pixels = np.stack([item[0] for item in items])
    scaled = pixels.astype(np.float64) / 255
    return (
        torch.from_numpy(pixels),
        torch.tensor([item[1] for item in items]),
        torch.from_numpy(scaled.sum(axis=(2, 3))),
        torch.from_numpy((scaled**2).sum(axis=(2, 3))),
        [item[2] for item in items],
    )


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock (flock) on `path` while the block runs; others wait."""
    with open(path, "a+b") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for %s: another process is building this cache", path)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


if __name__ == "__main__":
    import sys
    import tempfile

    from PIL import Image

    from src.data.image_files import scan_folder

    logging.basicConfig(level=logging.INFO)
    with tempfile.TemporaryDirectory() as tmp:
        for i, name in enumerate(("a", "b")):
            (Path(tmp) / "images" / name).mkdir(parents=True)
            Image.new("L", (28, 28), 100 * i).save(Path(tmp) / "images" / name / "0.png")
        scan = scan_folder(sys.argv[1] if len(sys.argv) > 1 else Path(tmp) / "images")
        cache = open_cache(scan, 1, 28, Path(tmp) / "cache", workers=0)
        print(cache.folder.name, cache.shape, "mean/std", cache.channel_stats(np.arange(2)))
