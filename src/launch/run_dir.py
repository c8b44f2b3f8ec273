"""The run directory a process owns: locked for the run's whole life, never shared with another
run, and left as it was found when the start fails.

- One process per run directory: rank 0 holds an exclusive lock on `<run dir>/.lock` until it
  exits. A second process is refused in one line naming the directory and the holder.
- One run per run directory: a fresh run refuses a directory that already holds another run's
  metrics, checkpoints or results; resuming that run (`resume=...`) is the way back into it.
- A start that fails (bad config, missing data, a refused resume, a signal before training)
  removes what it wrote: a directory it created goes entirely; in an existing one, the files it
  added go and main.log is cut back to its old length.

`ClaimRunDirectory` is a Hydra callback (config.yaml, `hydra.callbacks`): Hydra calls it after
composing the config and before it creates the directory, writes `.hydra/` or opens main.log,
so a refused process changes nothing. A multirun trial claims its folder in src/sweep/trial.py.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from src.common.errors import UserError
from src.common.locks import FileLock, LockBusy
from src.launch.cli import USER_ERRORS, exit_with
from src.launch.distributed import world_from_env
from src.launch.signals import Interrupted, StopTraining

LOCK = ".lock"
LOG = "main.log"
RUN_OUTPUTS = ("metrics.csv", "results.json", "checkpoints/*.pt", "events.out.tfevents.*")


class RunDirectoryError(UserError):
    """The run directory is in use by another process, or holds another run."""


def outputs_of_a_run(path: Path) -> list[str]:
    """The files in `path` that a run leaves (metrics, checkpoints, results, events)."""
    return sorted({str(p.relative_to(path)) for pattern in RUN_OUTPUTS for p in path.glob(pattern)})


def lock_run_directory(path: Path, announce: bool = True) -> FileLock:
    """Take the run directory's lock, or raise naming the directory and the holder."""
    try:
        return FileLock(path / LOCK).acquire(announce=announce)
    except LockBusy as busy:
        raise RunDirectoryError(
            f"{path} is in use by another run ({busy.holder}); wait for it to end or choose "
            "another hydra.run.dir"
        ) from None


@dataclass
class RunDirectory:
    """A claimed run directory and what it held before this process touched it."""

    path: Path
    lock: FileLock
    created: list[Path] = field(default_factory=list)  # folders made for it, deepest first
    existing: set[Path] = field(default_factory=set)  # what it held before (relative paths)
    log_size: int = 0  # main.log's length before
    holder: bytes = b""  # .lock's line before (the previous run's)

    @classmethod
    def claim(cls, path: Path, resuming: str | None) -> RunDirectory:
        """Lock `path` (creating it); a fresh run (`resuming` None) refuses a directory that
        holds another run, and so does a resume from a checkpoint that is not this run's."""
        path = path.absolute()
        created = [p for p in (path, *path.parents) if not p.exists()]
        path.mkdir(parents=True, exist_ok=True)
        lock = lock_run_directory(path, announce=False)  # a refused run leaves even .lock alone
        found = outputs_of_a_run(path)
        if found and not _resumes(path, resuming):
            lock.release()
            raise RunDirectoryError(
                f"{path} already holds a run ({', '.join(found[:3])}); resume it with "
                f"resume={path}, or choose another hydra.run.dir"
            )
        holder = lock.path.read_bytes()
        lock.announce()
        log = path / LOG
        existing = {p.relative_to(path) for p in path.rglob("*")} - {Path(LOCK)}
        size = log.stat().st_size if log.is_file() else 0
        return cls(path, lock, created, existing, size, holder)

    def undo_start(self) -> None:
        """Remove what this process wrote, leaving the directory as it was found."""
        if self.path in self.created:
            shutil.rmtree(self.path, ignore_errors=True)
            for folder in self.created[1:]:  # parents made for it, if nothing else is in them
                try:
                    folder.rmdir()
                except OSError:
                    break
            return
        for added in sorted(self._added(), key=lambda p: len(p.parts)):
            target = self.path / added
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target, ignore_errors=True)
            else:
                target.unlink(missing_ok=True)
        log = self.path / LOG
        if Path(LOG) in self.existing and log.is_file():
            with open(log, "r+b") as handle:
                handle.truncate(self.log_size)
        if self.holder:
            self.lock.path.write_bytes(self.holder)

    def _added(self) -> list[Path]:
        now = {p.relative_to(self.path) for p in self.path.rglob("*")}
        added = now - self.existing - {Path(LOCK)}
        return [p for p in added if not any(parent in added for parent in p.parents)]


def _resumes(path: Path, resuming: str | None) -> bool:
    """Whether the run continues the run already in `path` (auto looks only there)."""
    if resuming in (None, "", "null"):
        return False
    if resuming == "auto":
        return True
    checkpoint = Path(resuming).absolute()
    return path in checkpoint.parents


_claimed: RunDirectory | None = None  # this process's run (None on other ranks, in sweeps)


class UndoFailedStart:
    """`with UndoFailedStart() as start:` around a run; it calls `start.training_began()` once
    there is work worth keeping. A user error, a stop or an interruption before that puts the
    claimed directory back as it was; a bug leaves it, with main.log, for its traceback."""

    def __init__(self) -> None:
        self.began = False

    def training_began(self) -> None:
        self.began = True

    def __enter__(self) -> UndoFailedStart:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: Any
    ) -> None:
        expected = (*USER_ERRORS, StopTraining, Interrupted)
        if _claimed is not None and not self.began and isinstance(err, expected):
            _claimed.undo_start()


class ClaimRunDirectory(Callback):
    """Hydra callback: claim `hydra.run.dir` before Hydra writes anything into it (rank 0)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        global _claimed
        if not world_from_env().is_main:
            return
        try:
            _claimed = RunDirectory.claim(Path(str(config.hydra.run.dir)), config.get("resume"))
        except USER_ERRORS as err:  # Hydra would turn an exception here into a mere warning
            exit_with(err)

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        global _claimed
        if _claimed is not None:
            _claimed.lock.release()
            _claimed = None
