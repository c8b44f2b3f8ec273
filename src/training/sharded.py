"""Sharded checkpoints: DCP (torch.distributed.checkpoint) folders that every rank writes its own
part of, in parallel, with no gather on rank 0.

    checkpoints/step-0000012/     one complete checkpoint: DCP's `.metadata` and one
                                  `__<rank>_0.distcp` file per rank (model and optimizer tensors),
                                  and `meta.pt`, everything else (counters, RNG, metric window,
                                  config, ...), written last: the folder's complete marker
    checkpoints/last, best        relative symlinks to a step folder, replaced atomically
A save writes `.step-0000012.tmp/`; once every rank's shard and DCP's metadata are on disk, rank 0
writes meta.pt, renames the folder and re-points `last` (and `best`). A kill -9 at any instant
leaves `last` on a complete checkpoint; the half folder is removed when the run resumes. A second
save at the same step gets a folder of its own (`step-0000012-1`), so no folder is ever replaced.

DCP reshards on load: a checkpoint written by any number of ranks loads on any other number,
or into a plain model on one process (`load_model`: evaluation, predict). Opening one runs
nothing: `.metadata` is unpickled with an allow-list of DCP's own record types, tensors are read
with `torch.load(weights_only=True)`, and meta.pt like any checkpoint file.
"""

from __future__ import annotations

import os
import pickle
import shutil
import warnings
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint import FileSystemReader, FileSystemWriter
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta

from src.common.errors import first_line
from src.common.files import fsync_dir
from src.training.checkpoint import (
    META,
    CheckpointError,
    CheckpointWriteError,
    copy_tensors,
    evaluation_state,
    load_model_weights,
    save_checkpoint,
    write_failure,
)

_DCP = "torch.distributed.checkpoint."
_SAFE_GLOBALS = {
    ("torch", "Size"),
    ("torch.serialization", "_get_layout"),
    ("pathlib", "PosixPath"),
    ("pathlib", "PurePosixPath"),
    ("collections", "OrderedDict"),
    (_DCP + "filesystem", "_StorageInfo"),
}


class _MetadataUnpickler(pickle.Unpickler):
    """DCP's `.metadata` is a pickle: only its own record types, dtypes and sizes may appear."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SAFE_GLOBALS or module == _DCP + "metadata":
            return super().find_class(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not part of a DCP checkpoint")


class SafeReader(FileSystemReader):
    """FileSystemReader whose metadata cannot name arbitrary code."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        with open(Path(self.path) / ".metadata", "rb") as handle:
            metadata: Metadata = _MetadataUnpickler(handle).load()
        storage = metadata.storage_meta = metadata.storage_meta or StorageMeta()
        storage.load_id = self.load_id
        return metadata


def split_tensors(tree: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the tensors, everything else) of nested dicts, each keeping the nesting: DCP stores the
    first, meta.pt the second (DCP would pickle non-tensor values)."""
    tensors: dict[str, Any] = {}
    rest: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, torch.Tensor):
            tensors[key] = value
        elif isinstance(value, dict):
            inner, other = split_tensors(value)
            if inner:
                tensors[key] = inner
            if other or not inner:
                rest[key] = other
        else:
            rest[key] = value
    return tensors, rest


def merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """The two halves `split_tensors` made, back as one tree."""
    out = dict(a)
    for key, value in b.items():
        out[key] = merge(out[key], value) if isinstance(out.get(key), dict) else value
    return out


def load_tensors(path: str | Path, template: dict[str, Any], collective: bool) -> None:
    """Fill `template`'s tensors in place from the checkpoint folder (resharding as needed).
    `collective`: every rank of the process group loads its shard together; otherwise this
    process reads whole tensors alone (one process, or each DDP rank on its own)."""
    try:
        with _one_process_is_meant():
            dcp.load(template, storage_reader=SafeReader(path), no_dist=not collective)
    except Exception as err:  # DCP wraps the cause per rank (CheckpointException)
        raise CheckpointError(f"{path} does not fit this model: {first_line(err)[:300]}") from err


def load_model(model: nn.Module, payload: dict[str, Any], path: str | Path) -> None:
    """A checkpoint's evaluation weights into a plain model on one process: a sharded checkpoint
    is consolidated here, without the world that wrote it; a single file gives its EMA average
    when the run kept one."""
    if "shards" not in payload:
        load_model_weights(model, evaluation_state(payload), path)
        return
    weights = model.state_dict()
    load_tensors(payload["shards"], {"model": weights}, collective=False)
    load_model_weights(model, weights, path)


class ShardedCheckpointer:
    """The Checkpointer's interface (`save`, `wait`, `last`, `best`) for DCP folders; every rank
    takes part in a save. With `async_save` a save copies the shard to memory and returns while
    a background thread writes it (DCP's async_save on a process group of its own)."""

    def __init__(
        self,
        directory: str | Path,
        keep_last_k: int = 1,
        enabled: bool = True,
        async_save: bool = False,
    ) -> None:
        self.directory = Path(directory)
        self.keep_last_k, self.enabled, self.async_save = keep_last_k, enabled, async_save
        self.collective = dist.is_available() and dist.is_initialized()
        self.is_main = not self.collective or dist.get_rank() == 0
        self._writer = ThreadPoolExecutor(max_workers=1)
        self._pending: list[Future[Any]] = []
        self._group: Any = None  # async saves talk on a process group of their own
        if async_save and self.collective:
            self._group = dist.new_group(backend="gloo")
        if enabled and self.is_main:
            self.directory.mkdir(parents=True, exist_ok=True)
            for stale in self.directory.glob(".*.tmp"):  # left by a kill -9 mid-save
                shutil.rmtree(stale) if stale.is_dir() else stale.unlink(missing_ok=True)

    @property
    def last(self) -> Path:
        return self.directory / "last"

    @property
    def best(self) -> Path:
        return self.directory / "best"

    def save(self, payload: dict[str, Any], step: int, is_best: bool = False) -> None:
        if not self.enabled:
            return
        self.wait()  # one save in flight at a time, and a failed one stops the run here
        tensors, rest = split_tensors(
            {"model": payload["model"], "optimizer": payload["optimizer"]}
        )
        meta = {k: v for k, v in payload.items() if k not in ("model", "optimizer")} | rest
        name = self._agree(self._free_name(step))
        temp = self.directory / f".{name}.tmp"
        temp.mkdir(parents=True, exist_ok=True)
        writer = FileSystemWriter(temp, sync_files=True)
        try:
            if self._group is not None:
                meta = copy_tensors(meta)  # training goes on changing the window
                saved = dcp.async_save(tensors, storage_writer=writer, process_group=self._group)
                self._pending.append(
                    self._writer.submit(self._commit, saved, meta, temp, name, is_best)
                )
                return
            with _one_process_is_meant():
                dcp.save(tensors, storage_writer=writer, no_dist=not self.collective)
        except Exception as err:
            raise CheckpointWriteError(write_failure(self.directory / name, err)) from err
        self._commit(None, meta, temp, name, is_best)

    def wait(self) -> None:
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()

    def close(self) -> None:
        """The save in flight on disk, the writer thread gone, and the saves' process group
        destroyed before the default one (shutdown in a fixed order). Takes no collective, so a
        failing rank may call it too; a clean exit calls it after a barrier, once every rank's
        save is over."""
        try:
            self.wait()
        finally:
            self._writer.shutdown(wait=True)
            if self._group is not None:
                dist.destroy_process_group(self._group)
                self._group = None

    def _commit(
        self, saved: Any, meta: dict[str, Any], temp: Path, name: str, is_best: bool
    ) -> None:
        """Once every shard is on disk: meta.pt (the complete marker), the rename, the links."""
        if saved is not None:
            saved.result()
        if not self.is_main:
            return
        final = self.directory / name
        try:
            save_checkpoint(temp / META, meta)
            os.rename(temp, final)
            fsync_dir(self.directory)
            _link(final, self.last)
            if is_best:
                _link(final, self.best)
        except (OSError, RuntimeError) as err:
            raise CheckpointWriteError(write_failure(final, err)) from err
        self._prune()

    def _free_name(self, step: int) -> str:
        """step-0000012, or step-0000012-<n> when a checkpoint of that step exists (rank 0)."""
        name, n = f"step-{step:07d}", 0
        while self.is_main and (self.directory / name).exists():
            n += 1
            name = f"step-{step:07d}-{n}"
        return name

    def _agree(self, name: str) -> str:
        """Every rank writes into the folder rank 0 named."""
        if not self.collective:
            return name
        names = [name]
        dist.broadcast_object_list(names, src=0)
        return str(names[0])

    def _prune(self) -> None:
        """Keep the newest keep_last_k step folders, and whatever last and best point to."""
        kept = {p.resolve() for p in (self.last, self.best) if p.exists()}
        folders = sorted((p for p in self.directory.glob("step-*") if p.is_dir()), key=_order)
        old = folders[: -self.keep_last_k] if self.keep_last_k > 0 else folders
        for folder in old:
            if folder.resolve() not in kept:
                shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def _one_process_is_meant() -> Iterator[None]:
    """DCP warns whenever it reads or writes without a process group: here that is the intent."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "torch.distributed is disabled", UserWarning)
        yield


def _order(path: Path) -> tuple[int, int]:
    """step-0000012-1 -> (12, 1): the order in which the folders were written."""
    parts = path.name.split("-")[1:]
    numbers = [int(p) if p.isdigit() else -1 for p in parts] + [0]
    return numbers[0], numbers[1]


def _link(target: Path, link: Path) -> None:
    """Point `link` at `target` (a sibling, by relative name) in one atomic rename."""
    temp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    temp.unlink(missing_ok=True)
    os.symlink(target.name, temp)
    os.replace(temp, link)
    fsync_dir(link.parent)


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        model = nn.Linear(3, 2)
        checkpointer = ShardedCheckpointer(tmp, keep_last_k=1)
        for step in (1, 2, 2):
            payload = {"model": model.state_dict(), "optimizer": {}, "state": {"step": step}}
            checkpointer.save(payload, step, is_best=step == 1)
        fresh = nn.Linear(3, 2)
        load_model(fresh, {"shards": str(checkpointer.last)}, checkpointer.last)
        print(sorted(os.listdir(tmp)), "->", os.readlink(checkpointer.last))
        print("weights equal:", torch.equal(fresh.weight, model.weight))
