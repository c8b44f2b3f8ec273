"""The IDX file format of MNIST-style datasets, and md5 checks of the raw files.

Reading is torchvision's job; writing lives here because the offline preparation path and the
tests both produce real IDX files.
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import numpy as np

from src.common.errors import UserError
from src.common.files import atomic_write_bytes

IMAGES_MAGIC = 2051  # unsigned byte, 3 dimensions
LABELS_MAGIC = 2049  # unsigned byte, 1 dimension


class DataError(UserError, RuntimeError):
    """A dataset file is missing, corrupt or cannot be obtained; the message says what to do."""


def encode_images(images: np.ndarray) -> bytes:
    """uint8 array (N, H, W) -> IDX bytes."""
    if images.dtype != np.uint8 or images.ndim != 3:
        raise ValueError(f"expected uint8 (N, H, W), got {images.dtype} {images.shape}")
    n, h, w = images.shape
    return struct.pack(">IIII", IMAGES_MAGIC, n, h, w) + images.tobytes()


def encode_labels(labels: np.ndarray) -> bytes:
    """uint8-compatible array (N,) -> IDX bytes."""
    if labels.ndim != 1:
        raise ValueError(f"expected labels of shape (N,), got {labels.shape}")
    return struct.pack(">II", LABELS_MAGIC, len(labels)) + labels.astype(np.uint8).tobytes()


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Atomically write images (3-d) or labels (1-d) as an IDX file."""
    data = encode_images(array) if array.ndim == 3 else encode_labels(array)
    atomic_write_bytes(path, data)


def md5sum(path: str | Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_files(folder: Path, expected_md5: dict[str, str]) -> None:
    """Raise DataError naming the first file that is missing or fails its md5."""
    for name, md5 in expected_md5.items():
        path = folder / name
        if not path.is_file():
            raise DataError(f"missing data file {path}")
        actual = md5sum(path)
        if actual != md5:
            raise DataError(
                f"{path} fails its md5 check (expected {md5}, got {actual}): "
                "delete it to prepare it again, or set data.verify_md5=false for your own data"
            )


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "demo-images-idx3-ubyte"
        write_idx(out, np.zeros((2, 28, 28), dtype=np.uint8))
        print(f"wrote {out.stat().st_size} bytes (16 header + 2*28*28), md5 {md5sum(out)}")
