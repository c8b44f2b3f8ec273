"""Find the checkpoint that `resume=...` names, and make Hydra reopen that run's directory.

`resume=auto`         the newest run under output_root (or hydra.run.dir) that has last.pt;
                      a fresh run when there is none (so a requeued job can always say auto)
`resume=<file.pt>`    that checkpoint
`resume=<run dir>`    <run dir>/checkpoints/last.pt
Hydra picks the run directory before any of our code runs, so `resume_argv` rewrites the
command line first: it points hydra.run.dir at the old run and replays that run's overrides
(from .hydra/overrides.yaml), with the ones given now taking precedence.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path

import yaml

from src.common.args import split_override
from src.training.checkpoint import CheckpointError, run_dir_of

log = logging.getLogger(__name__)


def locate_checkpoint(value: str, output_root: str, run_dir: str | None = None) -> Path | None:
    """The checkpoint `resume=value` refers to; None for auto with nothing to resume."""
    if value == "auto":
        roots = [Path(run_dir)] if run_dir else [Path(output_root)]
        found = [p for root in roots for p in root.glob("**/checkpoints/last.pt")]
        return max(found, key=lambda p: p.stat().st_mtime) if found else None
    path = Path(value)
    if path.is_dir():
        for candidate in (path / "checkpoints" / "last.pt", path / "last.pt"):
            if candidate.is_file():
                return candidate
        raise CheckpointError(f"resume={value}: no checkpoints/last.pt in that folder")
    if not path.is_file():
        raise CheckpointError(f"resume={value}: no such checkpoint file or run directory")
    return path


def resume_argv(argv: list[str], default_output_root: str) -> list[str]:
    """Rewrite a command line that asks to resume (single runs only; sweeps resume per trial)."""
    args = argv[1:]
    given = dict(split_override(a) for a in args if "=" in a and not a.startswith("-"))
    value = given.get("resume")
    if value in (None, "", "null") or any(a in ("-m", "--multirun") for a in args):
        return argv
    output_root = given.get("output_root") or default_output_root
    checkpoint = locate_checkpoint(value, output_root, given.get("hydra.run.dir"))
    if checkpoint is None:
        log.warning(
            "resume=auto: no run with checkpoints/last.pt under %s; starting fresh", output_root
        )
        return [argv[0], *(a for a in args if split_override(a)[0] != "resume")]
    run_dir = run_dir_of(checkpoint) or checkpoint.resolve().parent
    replay = _saved_overrides(run_dir)
    fixed = {"resume", "hydra.run.dir"}
    merged = [o for o in replay if split_override(o)[0] not in set(given) | fixed]
    merged += [a for a in args if split_override(a)[0] not in fixed]
    # The run's own .hydra/ record stays as it was; this resume's goes in a subfolder.
    record = f"hydra.output_subdir=.hydra/resume-{datetime.now():%Y%m%d-%H%M%S}"
    return [argv[0], *merged, f"hydra.run.dir={run_dir}", record, f"resume={checkpoint}"]


def _saved_overrides(run_dir: Path) -> list[str]:
    path = run_dir / ".hydra" / "overrides.yaml"
    return [str(o) for o in yaml.safe_load(path.read_text()) or []] if path.is_file() else []
