"""Read a multirun folder back: one `Trial` per job folder, from the files each run wrote.

Per trial: `.hydra/overrides.yaml` (what was swept), `.hydra/config.yaml` (which metric was
monitored, and in which direction), `results.json` (status, final and best metrics) and
`metrics.csv` (the validation curve, and the training loss). Metric names are whatever the runs
logged: nothing here knows a task. A folder without results.json is `incomplete`; an Optuna
trial that its pruner stopped early is `pruned`, one cut off with its sweep and queued again as
a new trial is `retried`.
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

FINISHED = ("completed", "pruned")  # ran to its end (a pruned trial stopped early on purpose)
SETTLED = (*FINISHED, "retried")  # nothing left to do (a retried trial's parameters ran again)


@dataclass
class Trial:
    name: str  # the job's folder name (its number under Hydra's default subdir)
    path: Path
    overrides: dict[str, str]  # key -> value, as typed on the command line
    status: str  # completed | pruned | failed | stopped | retried | incomplete
    results: dict[str, Any]
    monitor: str = "val/acc"
    mode: str = "max"
    curve: list[tuple[int, float]] = field(default_factory=list)  # (step, monitored val metric)
    train_loss: list[tuple[int, float]] = field(default_factory=list)  # (step, training loss)
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
    trial.curve, trial.train_loss, trial.final = _curves(folder / "metrics.csv", trial.monitor)
    return trial


def as_number(value: str) -> float | None:
    """The override's value as a number, None for words (model=cnn) and lists."""
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


NOT_METRICS = {"step", "epoch", "split", "lr", "samples_per_s"}
Curve = list[tuple[int, float]]


def _curves(path: Path, monitor: str) -> tuple[Curve, Curve, dict[str, float]]:
    """The monitored metric at every validation, the training loss at every logging step, and
    every metric of the last validation row (as `val/<name>`)."""
    if not path.is_file():
        return [], [], {}
    metric = monitor.split("/", 1)[1]
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    val = [row for row in rows if row.get("split") == "val"]
    curve = [(int(r["step"]), float(r[metric])) for r in val if r.get(metric)]
    train = [
        (int(r["step"]), float(r["loss"]))
        for r in rows
        if r.get("split") == "train" and r.get("loss")
    ]
    last = val[-1] if val else {}
    final = {f"val/{k}": float(v) for k, v in last.items() if k not in NOT_METRICS and v}
    return curve, [p for p in train if math.isfinite(p[1])], final


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
