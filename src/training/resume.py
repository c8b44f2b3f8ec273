"""Find the checkpoint that `resume=...` names, reopen its run, and decide what carries over.

`resume=auto`         the newest run under output_root (or hydra.run.dir) that has last.pt;
                      none found: a fresh run (so a requeued job can always say auto)
`resume=<file.pt>`    that checkpoint (one outside a run's checkpoints/ continues in a new run)
`resume=<run dir>`    <run dir>/checkpoints/last.pt
Hydra picks the run directory before any of our code runs, so `resume_argv` rewrites the
command line first: it points hydra.run.dir at the old run and replays that run's overrides
(from .hydra/overrides.yaml), with the ones given now taking precedence. A run folder may come
from someone else, so only plain values and the project's own config options are replayed:
Hydra's own settings (`hydra.*`) are dropped, and an override that names a `_target_`, holds an
interpolation or selects a yaml outside src/config refuses the resume in one line.

What carries over (`plan_resume`): the run's identity (the model, the optimizer, and the data
and task targets) must match the checkpoint's config, or the resume is refused naming the keys,
unless `allow_resume_changes=true`. Optimizer and schedule continue exactly as saved when neither
changed; when the planned length changed (a larger `runner.max_epochs`, say) or the optimizer
settings did, the schedule is rebuilt over the remaining steps, from the current step to the new
end (a new warm-up and decay), and the optimizer keeps its per-parameter state (moments) under
the new settings.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
import yaml

from src.common.args import split_override
from src.common.errors import UserError
from src.training.checkpoint import META, CheckpointError, run_dir_of

log = logging.getLogger(__name__)
# Compared between the checkpoint's config and the new one: every key (None), or these keys.
IDENTITY: dict[str, tuple[str, ...] | None] = {
    "model": None,
    "optimizer": None,
    "data": ("_target_",),
    "task": ("_target_",),
}
_UNSAFE = ("_target_", "_args_", "_partial_", "_recursive_", "_convert_", "${")
_FIXED = {"resume", "hydra.run.dir", "hydra.output_subdir"}  # set by resume_argv itself
_NOT_REPLAYED = {*_FIXED, "allow_resume_changes"}  # a permission is given at each resume
LAST = ("last.pt", "last")  # the newest checkpoint: one file, or a link to a sharded folder


class ResumeMismatch(UserError):
    """The config asked for now differs from the checkpoint's in what makes the run itself."""


def locate_checkpoint(value: str, output_root: str, run_dir: str | None = None) -> Path | None:
    """The checkpoint `resume=value` refers to; None for auto with nothing to resume. `last.pt`
    is a single-file checkpoint, `last` a sharded one (a link to a complete DCP folder)."""
    if value == "auto":
        roots = [Path(run_dir)] if run_dir else [Path(output_root)]
        found = [p for root in roots for name in LAST for p in root.glob(f"**/checkpoints/{name}")]
        found = [p for p in found if p.exists()]  # not a link left dangling by hand
        return max(found, key=lambda p: p.stat().st_mtime) if found else None
    path = Path(value)
    if path.is_dir() and (path / META).is_file():
        return path  # a sharded checkpoint itself
    if path.is_dir():
        for candidate in [path / "checkpoints" / name for name in LAST] + [path / "last.pt"]:
            if candidate.exists():
                return candidate
        raise CheckpointError(f"resume={value}: no checkpoints/last.pt (or last) in that folder")
    if not path.is_file():
        raise CheckpointError(f"resume={value}: no such checkpoint file or run directory")
    return path


def resume_argv(argv: list[str], default_output_root: str, config_dir: Path) -> list[str]:
    """Rewrite a command line that asks to resume (single runs only; sweeps resume per trial)."""
    args = argv[1:]
    given = dict(split_override(a) for a in args if "=" in a and not a.startswith("-"))
    value = given.get("resume")
    if value in (None, "", "null") or any(a in ("-m", "--multirun") for a in args):
        return argv
    output_root = given.get("output_root") or default_output_root
    checkpoint = locate_checkpoint(value, output_root, given.get("hydra.run.dir"))
    if checkpoint is None and "hydra.run.dir" in given:
        return argv  # that run again from the start (a requeued job that never checkpointed)
    if checkpoint is None:
        log.warning(
            "resume=auto: no run with checkpoints/last.pt under %s; starting fresh", output_root
        )
        return [argv[0], *(a for a in args if split_override(a)[0] != "resume")]
    run_dir = run_dir_of(checkpoint)
    if run_dir is None:  # a checkpoint outside a run: continue from it in a new run directory
        return argv
    saved = [o for o in _saved_overrides(run_dir) if split_override(o)[0] not in set(given)]
    merged = [*replayable(saved, run_dir, config_dir)]
    merged += [a for a in args if split_override(a)[0] not in _FIXED]
    # The run's own .hydra/ record stays as it was; this resume's goes in a subfolder.
    record = f"hydra.output_subdir=.hydra/resume-{datetime.now():%Y%m%d-%H%M%S-%f}"
    return [argv[0], *merged, f"hydra.run.dir={run_dir}", record, f"resume={checkpoint}"]


def elastic_restart(argv: list[str], default_output_root: str, stamp: str) -> list[str]:
    """A worker group torchrun restarted (`--max-restarts`, after a rank died) continues its own
    run: `resume=auto` in the run directory the first attempt used (`stamp` names it, as
    ${run_stamp:} did), from its last checkpoint, or from the start when it never wrote one. A
    `resume=` given for the first attempt stands only until the run has a checkpoint of its own.
    """
    args = argv[1:]
    restarted = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0
    if not restarted or {"-m", "--multirun"} & set(args):
        return argv
    given = dict(split_override(a) for a in args if "=" in a and not a.startswith("-"))
    root = given.get("output_root", default_output_root)
    run_dir = given.get("hydra.run.dir") or f"{root}/{stamp}"
    own = Path(run_dir).is_dir() and locate_checkpoint("auto", root, run_dir) is not None
    if given.get("resume") not in (None, "", "null") and not own:
        return argv
    log.warning("torchrun restarted the workers: resuming %s", run_dir)
    kept = [a for a in args if split_override(a)[0] not in ("resume", "hydra.run.dir")]
    return [argv[0], *kept, "resume=auto", f"hydra.run.dir={run_dir}"]


def replayable(saved: list[str], run_dir: Path, config_dir: Path) -> list[str]:
    """The saved overrides that are safe to replay (see the module docstring)."""
    kept, dropped = [], []
    for override in saved:
        key, value = split_override(override)
        if key in _NOT_REPLAYED:
            continue
        if key.startswith("hydra"):
            dropped.append(override)
            continue
        if any(word in override for word in _UNSAFE):
            why = "it names a _target_ or holds an interpolation"
        elif not _project_option(key, value, config_dir):
            why = "it does not select one of the project's yaml files"
        else:
            kept.append(override)
            continue
        raise CheckpointError(
            f"resume: refusing to replay {override!r} from {run_dir}/.hydra/overrides.yaml "
            f"({why}: a run folder may not make us run other code); if you trust it, give "
            f"{key}=... on the command line yourself"
        )
    if dropped:
        log.warning("resume: Hydra settings of the old run not replayed: %s", " ".join(dropped))
    return kept


def _project_option(key: str, value: str, config_dir: Path) -> bool:
    """A group selection (`model=mlp`, or a list: `logger=[tensorboard,mlflow]`) must name
    yaml files inside that group's folder."""
    if ".." in key:
        return False
    group = config_dir / key.split("@")[0]
    if not group.is_dir() or value in ("", "null"):
        return True  # a plain value, not a choice of yaml file
    names = value[1:-1].split(",") if value.startswith("[") and value.endswith("]") else [value]
    options = [(group / f"{name.strip()}.yaml").resolve() for name in names if name.strip()]
    return all(option.parent == group.resolve() and option.is_file() for option in options)


def _saved_overrides(run_dir: Path) -> list[str]:
    path = run_dir / ".hydra" / "overrides.yaml"
    return [str(o) for o in yaml.safe_load(path.read_text()) or []] if path.is_file() else []


@dataclass
class ResumePlan:
    """A checkpoint to continue from, checked against the config asked for now."""

    path: Path
    payload: dict[str, Any]
    config: dict[str, Any]  # the new run's resolved config
    allow_changes: bool

    @property
    def step(self) -> int:
        return int(self.payload["state"]["step"])

    @property
    def keeps_moments(self) -> bool:
        """Same optimizer class: its per-parameter state (moments) carries over."""
        saved = (self.payload.get("config") or {}).get("optimizer") or {}
        return bool(saved.get("_target_") == self.config["optimizer"].get("_target_"))

    def schedule(self, total_steps: int) -> tuple[dict[str, Any], bool]:
        """(the schedule the resumed run follows, whether it continues exactly): the saved one
        when neither it nor the optimizer changed, else a new one from the current step to the
        new end, under which the optimizer keeps only its per-parameter state."""
        new = schedule_of(self.config, total_steps)
        saved = self.payload.get("schedule") or new  # older checkpoints: assume unchanged
        if self.continues_exactly(saved, new):
            return {**new, "from_step": saved.get("from_step", 0)}, True
        return {**new, "from_step": self.step}, False

    def to_load(self, exact: bool) -> dict[str, Any]:
        """What `Runner.load` restores: without optimizer and scheduler state when rebuilt."""
        return self.payload if exact else {**self.payload, "optimizer": None, "scheduler": None}

    def continues_exactly(self, saved: dict[str, Any], new: dict[str, Any]) -> bool:
        """Same optimizer settings and the same schedule: their saved states load as they are."""
        keys = ("scheduler", "total_steps")
        same_schedule = all(saved.get(k) == new[k] for k in keys)
        saved_optimizer = (self.payload.get("config") or {}).get("optimizer")
        return same_schedule and saved_optimizer == self.config.get("optimizer")

    def check_data(self, info: dict[str, Any]) -> None:
        """The data's shape facts (classes, channels, image size, ...) must match the
        checkpoint's, unless changes are allowed."""
        saved = self.payload.get("data_info") or {}
        differ = [
            f"data_info.{key} ({_short(saved[key])} -> {_short(info[key])})"
            for key in sorted(saved)
            if key in info and saved[key] != info[key]
        ]
        if differ and not self.allow_changes:
            raise ResumeMismatch(
                f"resume={self.path}: the data differs from the checkpoint's in "
                f"{', '.join(differ)}; add allow_resume_changes=true to continue anyway"
            )


def plan_resume(
    path: Path, payload: dict[str, Any], config: dict[str, Any], allow_changes: bool
) -> ResumePlan:
    """Compare the checkpoint's config with the one asked for now; a changed identity (model,
    optimizer, data or task) is refused in one line naming the keys, unless allowed."""
    changes = config_changes(payload.get("config") or {}, config)
    if changes and not allow_changes:
        raise ResumeMismatch(
            f"resume={path}: the config differs from the checkpoint's in {', '.join(changes)}; "
            "resume with the checkpoint's values, or add allow_resume_changes=true to continue "
            "under the new ones"
        )
    if changes:
        log.warning("resuming %s with a changed config: %s", path, ", ".join(changes))
    return ResumePlan(path, payload, config, allow_changes)


def config_changes(saved: dict[str, Any], config: dict[str, Any]) -> list[str]:
    """`group.key (old -> new)` for every identity key that differs. Model fields left None in
    the new config are filled from the data later; the data's facts are compared instead."""
    changes = []
    for group, keys in IDENTITY.items():
        old, new = saved.get(group) or {}, config.get(group) or {}
        for key in keys or sorted(set(old) | set(new), key=str):
            if key in new and new[key] is None:
                continue
            if old.get(key) != new.get(key):
                changes.append(f"{group}.{key} ({_short(old.get(key))} -> {_short(new.get(key))})")
    return changes


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def schedule_of(config: dict[str, Any], total_steps: int, from_step: int = 0) -> dict[str, Any]:
    """What a checkpoint records about its learning-rate schedule: the scheduler config, the
    run's planned total of optimizer steps, and the step the schedule started from."""
    return {
        "scheduler": config.get("scheduler"),
        "total_steps": total_steps,
        "from_step": from_step,
    }


def load_optimizer_moments(optimizer: torch.optim.Optimizer, load: Callable[[], None]) -> None:
    """The saved per-parameter state (e.g. Adam's moments; `load` restores it, as the strategy
    keeps it) under this optimizer's own hyperparameters: they come from the new config, and a
    new schedule starts from them."""
    fresh = [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]
    try:
        load()
    except (ValueError, KeyError, RuntimeError) as err:
        raise CheckpointError(f"the checkpoint's optimizer state does not fit: {err}") from err
    for group, values in zip(optimizer.param_groups, fresh):
        for key in [k for k in group if k != "params" and k not in values]:
            del group[key]  # left by the old schedule (initial_lr, max_lr, ...)
        group.update(values)
