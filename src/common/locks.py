"""An exclusive lock on a file, held by one process at a time.

A run directory is locked for a run's whole life (src/launch/run_dir.py), and data preparation
locks its dataset folder so that parallel sweep trials, DDP ranks and separate jobs prepare it
once (src/data/prepare.py). The lock is `flock` on an open file: the kernel drops it when the
process ends, even on kill -9, so a lock file left behind never blocks anyone. The file holds one
line saying who holds it, for the message the next process shows.
"""

from __future__ import annotations

import fcntl
import os
import socket
from datetime import datetime
from pathlib import Path

from src.common.errors import UserError


class LockBusy(UserError):
    """Another process holds the lock; the message names the file and the holder."""

    def __init__(self, path: Path, holder: str) -> None:
        super().__init__(f"{path} is locked by {holder}")
        self.path, self.holder = path, holder


class FileLock:
    """`with FileLock(path):` or `lock = FileLock(path).acquire()` ... `lock.release()`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, wait: bool = False, announce: bool = True) -> FileLock:
        """Take the lock; without `wait`, raise LockBusy at once when someone else has it.
        `announce` writes who holds it into the file (`announce()` does it later)."""
        if self._fd is not None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            raise LockBusy(self.path, holder(self.path)) from None
        except BaseException:  # e.g. a signal while waiting
            os.close(fd)
            raise
        self._fd = fd
        if announce:
            self.announce()
        return self

    def announce(self) -> None:
        """Write this process's description into the lock file, for whoever is refused next."""
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, f"{describe_this_process()}\n".encode(), 0)

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FileLock:
        return self.acquire(wait=True)

    def __exit__(self, *exc: object) -> None:
        self.release()


def describe_this_process() -> str:
    return f"pid {os.getpid()} on {socket.gethostname()} (since {datetime.now():%Y-%m-%d %H:%M:%S})"


def holder(path: Path) -> str:
    """Who holds the lock on `path`, as its holder wrote it."""
    try:
        text = path.read_text().strip()
    except OSError:
        text = ""
    return text or "another process"


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp, FileLock(Path(tmp) / ".lock") as lock:
        try:
            FileLock(lock.path).acquire()
        except LockBusy as err:
            print("second lock refused:", err)
