"""Read a multirun folder back: one `Trial` per job folder, from the files each run wrote.

Per trial: `.hydra/overrides.yaml` (what was swept), `.hydra/config.yaml` (which metric was
monitored, and in which direction), `results.json` (status, final and best metrics) and
`metrics.csv` (the validation curve). A folder without results.json is `incomplete`.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from src.common.args import split_override


@dataclass
class Trial:
    name: str  # the job's folder name (its number under Hydra's default subdir)
    path: Path
    overrides: dict[str, str]  # key -> value, as typed on the command line
    status: str  # completed | failed | stopped | incomplete
    results: dict[str, Any]
    monitor: str = "val/acc"
    mode: str = "max"
    curve: list[tuple[int, float]] = field(default_factory=list)  # (step, monitored val metric)
    final: dict[str, float] = field(default_factory=dict)  # the last validation row

    @property
    def score(self) -> float | None:
        """best/<monitor>, the number the sweep ranks by; None when the trial has none."""
        value = self.results.get(f"best/{self.monitor}")
        if not isinstance(value, int | float) or math.isnan(value):
            return None
        return float(value)

    @property
    def error(self) -> str:
        return str(self.results.get("error", ""))


def collect(sweep_dir: str | Path) -> list[Trial]:
    """Every job folder directly under `sweep_dir`, in job order."""
    folders = [p.parent.parent for p in Path(sweep_dir).glob("*/.hydra/overrides.yaml")]
    return [read_trial(folder) for folder in sorted(folders, key=_job_order)]


def read_trial(folder: Path) -> Trial:
    overrides = dict(split_override(o) for o in _load_yaml(folder / ".hydra/overrides.yaml") or [])
    runner = (_load_yaml(folder / ".hydra/config.yaml") or {}).get("runner") or {}
    results = _load_json(folder / "results.json")
    trial = Trial(
        name=folder.name,
        path=folder,
        overrides=overrides,
        status=str(results.get("status", "incomplete")),
        results=results,
        monitor=str(runner.get("monitor", "val/acc")),
        mode=str(runner.get("monitor_mode", "max")),
    )
    trial.curve, trial.final = _validation(folder / "metrics.csv", trial.monitor)
    return trial


def as_number(value: str) -> float | None:
    """The override's value as a number, None for words (model=cnn) and lists."""
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _validation(path: Path, monitor: str) -> tuple[list[tuple[int, float]], dict[str, float]]:
    """The monitored metric at every validation, and the last validation row's numbers."""
    if not path.is_file():
        return [], {}
    metric = monitor.split("/", 1)[1]
    with open(path, newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("split") == "val"]
    curve = [(int(r["step"]), float(r[metric])) for r in rows if r.get(metric)]
    final = {f"val/{k}": float(rows[-1][k]) for k in ("loss", "acc") if rows and rows[-1].get(k)}
    return curve, final


def _job_order(folder: Path) -> tuple[int, int | str]:
    return (0, int(folder.name)) if folder.name.isdigit() else (1, folder.name)


def _load_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None


def _load_json(path: Path) -> dict[str, Any]:
    try:
        loaded = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


if __name__ == "__main__":
    import sys

    for t in collect(sys.argv[1] if len(sys.argv) > 1 else "multirun"):
        print(t.name, t.status, t.overrides, t.score, len(t.curve), "validations")
