"""Atomic file writes: a reader sees the old file or the new one, never half of either.

Every write goes to a uniquely named temporary file in the target's folder (so concurrent
writers never share one), is flushed and fsynced, then renamed over the target; the folder is
fsynced so the rename itself survives a crash. Temporary files are created with mode 0666
filtered by the umask, like any other file the process writes, so collaborators on shared
storage can read checkpoints and results when the umask allows it.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def temporary_name(path: str | Path, suffix: str = ".tmp") -> Path:
    """A hidden name beside `path` that no other writer uses: `.<name>.<random>.tmp`."""
    path = Path(path)
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}{suffix}")


def _create_temporary(path: Path) -> tuple[int, Path]:
    """Open a new temporary file beside `path`; O_EXCL guarantees it is ours alone."""
    while True:
        tmp = temporary_name(path)
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue


@contextmanager
def atomic_open(path: str | Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Write to a temporary file in the same folder, fsync it, then rename it over `path`.

    A crash or kill at any instant leaves either the previous file or the complete new one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temporary(path)
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """For writers that insist on a file name (savefig, profiler traces): they write to the
    yielded temporary path (same suffix, so formats are still guessed right), which is then
    fsynced and renamed over `path`; on any error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path, path.suffix)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    with atomic_open(path, "w") as handle:
        json.dump(obj, handle, indent=2, sort_keys=True)
        handle.write("\n")


def atomic_save(path: str | Path, writer: Callable[[IO[bytes]], None]) -> None:
    """Atomically write whatever `writer(handle)` produces (e.g. `torch.save`)."""
    with atomic_open(path, "wb") as handle:
        writer(handle)


def atomic_copy(source: str | Path, target: str | Path) -> None:
    """Copy `source` to `target` so that `target` is never seen half written."""
    with open(source, "rb") as src, atomic_open(target, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "demo.json"
        atomic_write_json(out, {"ok": True})
        print(out.read_text().strip(), oct(out.stat().st_mode & 0o777), os.listdir(tmp))
