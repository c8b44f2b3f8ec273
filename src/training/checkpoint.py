"""Checkpoint files: written atomically, read back with one clear error when unusable.

Layout inside a run directory:
    checkpoints/last.pt            newest state (every checkpoint_every_n_steps and epoch end)
    checkpoints/best.pt            state at the best monitored value
    checkpoints/step-0000123.pt    the newest `keep_last_k` step checkpoints
(Under FSDP each is a folder of shards instead: src/training/sharded.py.)
A write that fails (a full disk, a quota) leaves the previous files as they were and stops the
run with one line naming the file and the free space.
"""

from __future__ import annotations

import os
import shutil
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from src.common.errors import UserError, first_line
from src.common.files import atomic_save, temporary_name

FORMAT_VERSION = 1
META = "meta.pt"  # a sharded checkpoint's everything-but-tensors, written last


class CheckpointError(UserError, RuntimeError):
    """A checkpoint is missing, truncated, corrupt or does not fit the model."""


class CheckpointWriteError(UserError, OSError):
    """A checkpoint could not be written (disk full, quota, I/O error); the older one is intact."""


class Checkpointer:
    """Writes last.pt / best.pt / step-N.pt, off the training thread.

    `save` snapshots the payload (a copy of every tensor, cheap next to a training step) and hands
    it to one background writer, so the loop never waits for serialisation or fsync. Writes happen
    in order; `wait()` blocks until all are on disk and re-raises a failed write (e.g. disk full).
    """

    def __init__(
        self,
        directory: str | Path,
        keep_last_k: int = 1,
        enabled: bool = True,
    ) -> None:
        self.directory = Path(directory)
        self.keep_last_k = keep_last_k
        self.enabled = enabled  # False on DDP ranks other than 0, and in debug runs
        self._writer = ThreadPoolExecutor(max_workers=1)
        self._pending: list[Future[None]] = []
        if enabled:  # this process owns the run (its directory is locked): nobody else writes
            for stale in self.directory.glob(".*.tmp"):  # left by a kill -9 mid-write
                stale.unlink(missing_ok=True)

    @property
    def last(self) -> Path:
        return self.directory / "last.pt"

    @property
    def best(self) -> Path:
        return self.directory / "best.pt"

    def save(self, payload: dict[str, Any], step: int, is_best: bool = False) -> None:
        """last.pt always; best.pt too when `is_best`; step-<n>.pt when keep_last_k > 0."""
        if not self.enabled:
            return
        self._raise_failed()
        snapshot = copy_tensors(payload)
        self._pending.append(self._writer.submit(self._write, snapshot, step, is_best))

    def wait(self) -> None:
        """Block until every checkpoint handed to `save` is on disk."""
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()

    def close(self) -> None:
        """Everything on disk, and the writer thread gone: nothing runs on after the run."""
        try:
            self.wait()
        finally:
            self._writer.shutdown(wait=True)

    def _raise_failed(self) -> None:
        done = [f for f in self._pending if f.done()]
        self._pending = [f for f in self._pending if not f.done()]
        for future in done:
            future.result()

    def _write(self, payload: dict[str, Any], step: int, is_best: bool) -> None:
        target = self.last
        try:
            save_checkpoint(target, payload)
            if is_best:
                _link_or_copy(self.last, target := self.best)
            if self.keep_last_k > 0:
                _link_or_copy(self.last, target := self.directory / f"step-{step:07d}.pt")
        except (OSError, RuntimeError) as err:  # torch reports a full disk as a RuntimeError
            raise CheckpointWriteError(write_failure(target, err)) from err
        steps = sorted(self.directory.glob("step-*.pt"), key=_step_number)
        for old in steps[: -self.keep_last_k] if self.keep_last_k > 0 else []:
            old.unlink(missing_ok=True)


def _step_number(path: Path) -> int:
    """step-0000123.pt -> 123 (names outgrow their zero padding after 9,999,999 steps)."""
    digits = path.stem.partition("-")[2]
    return int(digits) if digits.isdigit() else -1


def write_failure(path: Path, err: BaseException) -> str:
    free = shutil.disk_usage(path.parent).free if path.parent.is_dir() else 0
    kept = f"the previous {path.name} is intact" if path.exists() else f"no {path.name} yet"
    return f"could not write {path} ({first_line(err)}); {_size(free)} free there; {kept}"


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024:
            return f"{n:.0f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def copy_tensors(value: Any) -> Any:
    """A snapshot that training can no longer change (parameters are updated in place)."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, dict):
        return {k: copy_tensors(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(copy_tensors(v) for v in value)
    return value


def _link_or_copy(source: Path, target: Path) -> None:
    """Atomically make `target` hold the same bytes as `source` (a hard link: no second write)."""
    temp = temporary_name(target)
    try:
        try:
            os.link(source, temp)
        except OSError:
            shutil.copyfile(source, temp)
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def evaluation_state(payload: dict[str, Any]) -> dict[str, Any]:
    """The model weights to evaluate a checkpoint with: the averaged (EMA) parameters when the
    run kept an average, the trained ones otherwise."""
    averaged = payload.get("callbacks", {}).get("ema", {}).get("weights", {})
    return {**payload["model"], **averaged}


def run_dir_of(checkpoint: str | Path) -> Path | None:
    """<run>/checkpoints/x.pt -> <run>; None for a checkpoint that lies outside a run."""
    path = Path(checkpoint).resolve()
    return path.parent.parent if path.parent.name == "checkpoints" else None


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    payload = {"format_version": FORMAT_VERSION, **payload}
    atomic_save(path, lambda handle: torch.save(payload, handle))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint`, tensors only (no arbitrary pickles)."""
    path = Path(path)
    if path.is_dir():  # a sharded checkpoint: the tensors stay on disk until a strategy loads them
        if not (path / META).is_file():
            raise CheckpointError(f"{path} is not a complete sharded checkpoint (no {META})")
        return {**load_checkpoint(path / META, map_location), "shards": str(path.resolve())}
    if not path.is_file():
        raise CheckpointError(f"no checkpoint file at {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise CheckpointError(
            f"{path} is not a readable checkpoint (truncated or corrupt: {first_line(err)})"
        ) from err
    if not isinstance(payload, dict) or payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path} was not written by this template (format_version differs)")
    return payload


def load_model_weights(model: torch.nn.Module, weights: dict[str, Any], path: str | Path) -> None:
    """Strict load, turning shape and key mismatches into one readable line."""
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        detail = lines[1] if len(lines) > 1 else lines[0]
        raise CheckpointError(f"{path} does not fit this model: {detail[:300]}") from err


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Checkpointer(tmp, keep_last_k=2)
        for step in (1, 2, 3):
            ckpt.save({"step": step}, step, is_best=step == 2)
        ckpt.wait()
        print(sorted(p.name for p in Path(tmp).iterdir()), load_checkpoint(ckpt.last)["step"])
