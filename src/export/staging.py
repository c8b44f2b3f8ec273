"""An export folder that appears whole or not at all.

Everything is written into a hidden folder beside the target and renamed over it at the end; an
error on the way removes it, and the lock file and parent folder it made, so a failed export
leaves no trace. Only an older export (a folder holding nothing but export files) is ever
replaced, and a lock beside the folder keeps two exports of one checkpoint from racing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from types import TracebackType

from src.common.errors import UserError
from src.common.files import fsync_dir, temporary_name
from src.common.locks import FileLock

FILES = {"model.safetensors", "model.json", "model.onnx", "model.onnx.data"}  # what we write


class ExportError(UserError):
    """The model cannot be exported: not traceable, no ONNX translation, or outputs that differ."""


def is_export(folder: Path) -> bool:
    """A folder this package wrote (or an empty one): the only kind an export may replace."""
    return folder.is_dir() and {p.name for p in folder.iterdir()} <= FILES


class Staging:
    """`with Staging(folder) as staging:` write into `staging`; on success it replaces `folder`
    in one rename, on failure it is removed."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.lock = FileLock(folder.parent / f".{folder.name}.lock")
        self.path = temporary_name(folder)

    def __enter__(self) -> Path:
        if self.folder.exists() and not is_export(self.folder):
            raise ExportError(f"{self.folder} exists and is not an export: choose another out=")
        self.made_parent = not self.folder.parent.exists()
        self.folder.parent.mkdir(parents=True, exist_ok=True)
        self.lock.acquire()
        for stale in self.folder.parent.glob(f".{self.folder.name}.*.tmp"):  # a kill -9's
            shutil.rmtree(stale, ignore_errors=True)
        self.path.mkdir()
        return self.path

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, _: TracebackType | None
    ) -> None:
        try:
            if kind is None:
                old = temporary_name(self.folder)
                if self.folder.exists():
                    os.replace(self.folder, old)
                os.replace(self.path, self.folder)
                fsync_dir(self.folder.parent)
                shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(self.path, ignore_errors=True)
            if not self.folder.exists():  # nothing exported: leave the folder as it was
                self.lock.path.unlink(missing_ok=True)
            self.lock.release()
            if self.made_parent and not self.folder.exists():
                with contextlib.suppress(OSError):  # not empty: someone else wrote there
                    self.folder.parent.rmdir()


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "export"
        try:
            with Staging(target) as staging:
                (staging / "model.json").write_text("{}")
                raise ExportError("a failure half way")
        except ExportError:
            pass
        print(f"after a failure: {sorted(p.name for p in Path(tmp).iterdir())} (nothing)")
        with Staging(target) as staging:
            (staging / "model.json").write_text("{}")
        print(f"after a success: {sorted(p.name for p in target.iterdir())}")
