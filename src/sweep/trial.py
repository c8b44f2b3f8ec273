"""One sweep trial: skipped when it already finished, recorded when it fails.

`run_trial` wraps `train` for every job of a multirun. A trial's identity lets a re-run sweep
skip trials that already completed in their folder; a trial that fails is recorded in its
results.json and the sweep goes on; a signal (Ctrl-C, SIGTERM) ends the whole sweep.

Hydra rewrites `.hydra/overrides.yaml` when a job starts, before the task runs, so that file
cannot tell whether the finished run had the same overrides. `results.json` therefore stores its
own copy of the overrides, a digest of the resolved config and the code's version (commit and
uncommitted changes); a trial is skipped only when all match and its status is `completed` (or
`pruned`: an Optuna pruner stopped it early).
Any other trial starts again from a clean folder: what an earlier attempt left (metrics,
checkpoints, results, records, its log) is removed first, so two attempts never mix. The trial
holds its folder's lock while it runs: a second sweep into the same folder is refused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from src.common.errors import one_line
from src.common.files import atomic_write_json
from src.launch import cli
from src.launch.run_dir import LOG, lock_run_directory
from src.launch.signals import Interrupted, StopTraining
from src.reporting.records import code_version
from src.sweep.collect import FINISHED

# What a run writes into its folder besides .hydra/ and main.log: an earlier attempt's copies go.
RUN_FILES = (
    "metrics.csv",
    "results.json",
    "curves.png",
    "checkpoints",
    "eval",
    "profile",
    "predict",
    "environment.json",
    "git.txt",
    "git.diff",
    "requirements.txt",
    "events.out.tfevents.*",
    "wandb",
)

log = logging.getLogger(__name__)


def run_trial(
    cfg: DictConfig,
    run_dir: Path,
    overrides: list[str],
    train: Callable[[dict[str, Any]], dict[str, Any]],
) -> float:
    """`train(tags)` unless this trial already completed here; the monitored metric (NaN when
    the trial failed, so the sweeper records it and moves on)."""
    trial = trial_identity(cfg, overrides)
    lock = lock_run_directory(run_dir)  # another sweep in this folder: refused, nothing written
    try:
        done = finished_results(run_dir, trial)
        if done is not None:
            log.info("trial already completed in %s (results.json); not run again", run_dir)
            return monitored_value(done, cfg.runner.monitor)
        clear_earlier_attempt(run_dir)
        try:
            results = train(trial)
        except (Exception, Interrupted) as err:
            stopped = isinstance(err, (StopTraining, Interrupted)) and err.exit_code >= 128
            record_failure(run_dir, err, trial, "stopped" if stopped else "failed")
            if stopped:  # a signal ends the whole sweep, not just this trial
                cli.exit_with(err)  # SystemExit: Hydra's launchers pass it through
            return float("nan")
        return monitored_value(results, cfg.runner.monitor)
    finally:
        lock.release()


def clear_earlier_attempt(run_dir: Path) -> None:
    """Remove what an earlier attempt of this trial wrote; empty its log (Hydra has it open)."""
    for pattern in RUN_FILES:
        for path in run_dir.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
    log_file = run_dir / LOG
    if log_file.is_file():
        with open(log_file, "r+b") as handle:
            handle.truncate(0)


def record_failure(run_dir: Path, err: BaseException, trial: dict[str, Any], status: str) -> None:
    """results.json says why the trial ended; a bug's traceback goes to main.log as well."""
    user_error = isinstance(err, (StopTraining, Interrupted, *cli.USER_ERRORS))
    message = one_line(err) if user_error else f"{type(err).__name__}: {one_line(err)}"
    log.error("trial %s: %s", status, message, exc_info=not user_error)
    atomic_write_json(run_dir / "results.json", {"status": status, "error": message, **trial})


def trial_identity(cfg: DictConfig, overrides: list[str]) -> dict[str, Any]:
    """What makes two trials the same: their overrides, their whole resolved config and the
    code that runs them (an edited model makes every trial run again)."""
    resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    text = json.dumps(resolved, sort_keys=True, default=str)
    config_sha = hashlib.sha256(text.encode()).hexdigest()
    return {"overrides": list(overrides), "config_sha": config_sha, "code": code_version()}


def finished_results(run_dir: Path, identity: dict[str, Any]) -> dict[str, Any] | None:
    """The stored results when `run_dir` holds a completed run of this very trial, else None."""
    try:
        results = json.loads((run_dir / "results.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(results, dict) or results.get("status") not in FINISHED:
        return None
    if any(results.get(key) != value for key, value in identity.items()):
        return None
    return results


def monitored_value(results: dict[str, Any], monitor: str) -> float:
    """The number a sweeper optimises: `best/<monitor>`, NaN when the run has none."""
    value = results.get(f"best/{monitor}")
    return float(value) if isinstance(value, int | float) else float("nan")


if __name__ == "__main__":
    import tempfile

    cfg = OmegaConf.create({"optimizer": {"lr": 0.01}, "seed": 0})
    identity = trial_identity(cfg, ["optimizer.lr=0.01"])
    with tempfile.TemporaryDirectory() as tmp:
        atomic_write_json(Path(tmp) / "results.json", {"status": "completed", **identity})
        print("same trial skipped:", finished_results(Path(tmp), identity) is not None)
        other = trial_identity(cfg, ["optimizer.lr=0.1"])
        print("other trial skipped:", finished_results(Path(tmp), other) is not None)
