"""A trial's identity, so that re-running a sweep into the same folder skips finished trials.

Hydra rewrites `.hydra/overrides.yaml` when a job starts, before the task runs, so that file
cannot tell whether the finished run had the same overrides. `results.json` therefore stores its
own copy of the overrides and a digest of the resolved config; a trial is skipped only when both
match and its status is `completed` (failed and interrupted trials run again).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf


def trial_identity(cfg: DictConfig, overrides: list[str]) -> dict[str, Any]:
    """What makes two trials the same: their overrides and their whole resolved config."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
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

    from src.common.files import atomic_write_json

    cfg = OmegaConf.create({"optimizer": {"lr": 0.01}, "seed": 0})
    identity = trial_identity(cfg, ["optimizer.lr=0.01"])
    with tempfile.TemporaryDirectory() as tmp:
        atomic_write_json(Path(tmp) / "results.json", {"status": "completed", **identity})
        print("same trial skipped:", finished_results(Path(tmp), identity) is not None)
        other = trial_identity(cfg, ["optimizer.lr=0.1"])
        print("other trial skipped:", finished_results(Path(tmp), other) is not None)
