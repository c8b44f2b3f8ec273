"""A folder of image files: its layout, its classes, and how one file becomes a uint8 array.

Two layouts (the first file of each class also tells the image size and colour when the config
leaves them open):

    root/<class>/*.png                     validation and test sets are carved from it
    root/train/<class>/*.png               ImageNet's convention; val/ and test/ are optional
    root/val/<class>/*.png                 (carved from train/ when absent)
    root/test/<class>/*.png

Every mistake in the folder (missing, no images, an empty class folder, a class only in val/)
is one `DataError` line that names the path; nothing is read beyond file names and sizes.
"""

from __future__ import annotations

import io
import os
import statistics
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np
from PIL import Image

from src.data.idx import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
SPLITS = ("train", "val", "test")  # their codes in `FolderScan.splits` are 0, 1, 2
TRAIN, VAL, TEST = range(3)
GREY_MODES = {"1", "L", "LA", "I", "I;16", "F"}
MAX_INFERRED_SIZE = 256  # an image side left open is never inferred larger than this


class CorruptFiles(str, Enum):
    refuse = "refuse"  # stop with one line naming the first file that does not decode
    skip = "skip"  # leave such files out and log how many


@dataclass
class FolderScan:
    """Every image file under a root, in a fixed order (split, class, name), with the size and
    modification time that key its cache."""

    root: Path
    classes: list[str]
    files: list[str]  # paths (root joined with the path below it)
    stats: list[tuple[int, int]]  # (bytes, mtime in ns) of each file
    labels: np.ndarray  # (N,) int64 class index
    splits: np.ndarray  # (N,) int8: the split folder a file came from (TRAIN without them)
    split_folders: tuple[int, ...]  # which splits have a folder of their own


def scan_folder(root: str | Path) -> FolderScan:
    root = Path(root)
    if not root.is_dir():
        reason = "is not a folder" if root.exists() else "does not exist"
        raise DataError(f"data.root {root} {reason}")
    if (root / "train").is_dir():
        present = [s for s, name in enumerate(SPLITS) if (root / name).is_dir()]
        classes = _class_folders(root / "train")
        folders = {s: root / SPLITS[s] for s in present}
    else:
        present, classes, folders = [TRAIN], _class_folders(root), {TRAIN: root}
    files: list[str] = []
    stats: list[tuple[int, int]] = []
    labels: list[int] = []
    splits: list[int] = []
    for split, folder in folders.items():
        for name in _class_folders(folder):
            if name not in classes:
                raise DataError(
                    f"{folder / name}: class {name!r} has no folder in {root / 'train'}"
                )
            found = _images_in(str(folder / name))
            if not found:
                raise DataError(
                    f"class folder {folder / name} holds no images "
                    f"({', '.join(IMAGE_EXTENSIONS)}): add some or remove the folder"
                )
            files += [path for path, _ in found]
            stats += [stat for _, stat in found]
            labels += [classes.index(name)] * len(found)
            splits += [split] * len(found)
    return FolderScan(
        root,
        classes,
        files,
        stats,
        np.array(labels, np.int64),
        np.array(splits, np.int8),
        tuple(present),
    )


def _class_folders(folder: Path) -> list[str]:
    names = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if names:
        return names
    loose = _images_in(str(folder), recursive=False)
    what = f"holds {len(loose)} images but no class subfolders" if loose else "holds no images"
    raise DataError(
        f"{folder} {what}: expected one subfolder per class (or train/, val/, test/ "
        "subfolders of class folders) holding .png or .jpg files"
    )


def _images_in(folder: str, recursive: bool = True) -> list[tuple[str, tuple[int, int]]]:
    """(path, (bytes, mtime_ns)) of the image files below `folder`, hidden ones left out,
    sorted by path. Plain strings and one stat per file: 70,000 files take a fraction of a
    second."""
    found = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                if recursive:
                    found += _images_in(entry.path)
            elif entry.name.lower().endswith(IMAGE_EXTENSIONS):
                try:
                    stat = entry.stat()
                except OSError as err:  # e.g. a link to nowhere
                    raise DataError(f"cannot read {entry.path}: {err.strerror or err}") from None
                found.append((entry.path, (stat.st_size, stat.st_mtime_ns)))
    return sorted(found)


def probe_format(scan: FolderScan) -> tuple[int, int]:
    """(side, channels) from the headers of the first image of each class: the median shorter
    side (at most MAX_INFERRED_SIZE) and 3 channels when any of them has colour."""
    sides, colour, seen = [], False, set()
    for path, label in zip(scan.files, scan.labels.tolist()):
        if label in seen:
            continue
        seen.add(label)
        try:
            with Image.open(path) as image:  # reads the header only
                sides.append(min(image.size))
                colour |= image.mode not in GREY_MODES
        except Exception:  # any unreadable file is reported by the decoding pass instead
            continue
    if not sides:
        raise DataError(
            f"no image under {scan.root} could be opened to infer the input size and "
            "channels: set data.image_size and data.channels"
        )
    return min(int(statistics.median(sides)), MAX_INFERRED_SIZE), 3 if colour else 1


def decode(data: bytes, channels: int, side: int) -> np.ndarray:
    """Encoded image bytes -> uint8 (channels, side, side): converted to grey or RGB and
    resized to the square (as `src/predict.py` reads images, so predictions see the same)."""
    with Image.open(io.BytesIO(data)) as image:
        converted = image.convert("L" if channels == 1 else "RGB")
    if converted.size != (side, side):
        converted = converted.resize((side, side), Image.Resampling.BILINEAR)
    pixels = np.asarray(converted, dtype=np.uint8)
    return pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)


if __name__ == "__main__":
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for name in ("cat", "dog"):
            (Path(tmp) / name).mkdir()
            Image.new("RGB", (40, 30), "red").save(Path(tmp) / name / "a.png")
        scan = scan_folder(sys.argv[1] if len(sys.argv) > 1 else tmp)
        print(
            f"{len(scan.files)} images, classes {scan.classes}, side/channels {probe_format(scan)}"
        )
