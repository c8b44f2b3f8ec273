"""One sweep trial: skipped when it already finished, recorded when it fails.

`run_trial` wraps `train` for every job of a multirun. A trial's identity lets a re-run sweep
skip trials that already completed in their folder; a trial that fails is recorded in its
results.json and the sweep goes on; a signal (Ctrl-C, SIGTERM) ends the whole sweep.

Hydra rewrites `.hydra/overrides.yaml` when a job starts, before the task runs, so that file
cannot tell whether the finished run had the same overrides. `results.json` therefore stores its
own copy of the overrides and a digest of the resolved config; a trial is skipped only when both
match and its status is `completed` (failed and interrupted trials run again).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from src.common.errors import one_line
from src.common.files import atomic_write_json
from src.launch import cli
from src.launch.signals import StopTraining

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
    done = finished_results(run_dir, trial)
    if done is not None:
        log.info("trial already completed in %s (results.json); not run again", run_dir)
        return monitored_value(done, cfg.runner.monitor)
    try:
        results = train(trial)
    except Exception as err:
        stopped = isinstance(err, StopTraining) and err.exit_code >= 128
        record_failure(run_dir, err, trial, "stopped" if stopped else "failed")
        if stopped:  # a signal ends the whole sweep, not just this trial
            cli.exit_with(err)  # SystemExit: Hydra's launchers pass it through
        return float("nan")
    return monitored_value(results, cfg.runner.monitor)


def record_failure(run_dir: Path, err: Exception, trial: dict[str, Any], status: str) -> None:
    """results.json says why the trial ended; a bug's traceback goes to main.log as well."""
    user_error = isinstance(err, (StopTraining, *cli.USER_ERRORS))
    message = one_line(err) if user_error else f"{type(err).__name__}: {one_line(err)}"
    log.error("trial %s: %s", status, message, exc_info=not user_error)
    atomic_write_json(run_dir / "results.json", {"status": status, "error": message, **trial})


def trial_identity(cfg: DictConfig, overrides: list[str]) -> dict[str, Any]:
    """What makes two trials the same: their overrides and their whole resolved config."""
    resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    text = json.dumps(resolved, sort_keys=True, default=str)
    return {"overrides": list(overrides), "config_sha": hashlib.sha256(text.encode()).hexdigest()}


def finished_results(run_dir: Path, identity: dict[str, Any]) -> dict[str, Any] | None:
    """The stored results when `run_dir` holds a completed run of this very trial, else None."""
    try:
        results = json.loads((run_dir / "results.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(results, dict) or results.get("status") != "completed":
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
