"""summary.csv and summary_groups.csv: one row per trial, ranked by the monitored metric.

The metric columns are whatever the trials report (`test/<name>` in results.json, the last
validation row's `val/<name>` in metrics.csv), so a task of one's own shows its own metrics.
When a setting was repeated over seeds or over the folds of a K-fold split (`data.fold`), the
trials are grouped by every other swept override and reported as mean ± sample standard
deviation (n - 1) with their count.
"""

from __future__ import annotations

import csv
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from src.common.files import atomic_open
from src.reporting.numbers import show
from src.sweep.collect import Trial

RUN_FIELDS = ["epochs", "steps", "wall_time_s"]
# Overrides that repeat a setting rather than change it, and what the summary calls them.
REPEAT_KEYS = {"seed": "seeds", "data.fold": "folds"}


@dataclass
class Group:
    values: dict[str, str]  # the swept overrides the trials share (all but seed and fold)
    trials: list[Trial]  # the completed ones
    failed: int

    def stat(self, key: str) -> tuple[float | None, float | None]:
        """Mean and sample standard deviation over the trials (std None for fewer than 2)."""
        numbers = [v for t in self.trials if (v := metric(t, key)) is not None]
        if not numbers:
            return None, None
        std = statistics.stdev(numbers) if len(numbers) > 1 else None
        return statistics.fmean(numbers), std


def swept_keys(trials: list[Trial]) -> list[str]:
    """Override keys whose value differs between trials (all keys when none differ)."""
    keys = list(dict.fromkeys(k for t in trials for k in t.overrides))
    varying = [k for k in keys if len({t.overrides.get(k) for t in trials}) > 1]
    return varying or keys


def monitor_key(trials: list[Trial]) -> str:
    return f"best/{trials[0].monitor}" if trials else "best/val/loss"


def metric_keys(trials: list[Trial]) -> list[str]:
    """The trials' own metrics: `final/val/<name>` then `test/<name>` (sample counts left out)."""
    finals = {f"final/{k}" for t in trials for k in t.final}
    tests = {
        k
        for t in trials
        for k, v in t.results.items()
        if k.startswith("test/") and not k.endswith("/samples") and _number(v) is not None
    }
    return sorted(finals, key=_loss_first) + sorted(tests, key=_loss_first)


def _loss_first(key: str) -> tuple[bool, str]:
    return (not key.endswith("/loss"), key)


def rank(trials: list[Trial]) -> list[Trial]:
    """Best first by best/<monitor>; trials without a score (failed, incomplete) last."""
    scored = [t for t in trials if t.score is not None]
    sign = -1.0 if trials and trials[0].mode == "max" else 1.0
    scored.sort(key=lambda t: _best_first(t.score, sign))
    return scored + [t for t in trials if t.score is None]


def metric(trial: Trial, key: str) -> float | None:
    """A number from results.json, or `final/<split>/<name>` from the last validation row."""
    value = trial.final.get(key.removeprefix("final/")) if key.startswith("final/") else None
    return _number(trial.results.get(key) if value is None else value)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        return None
    return float(value)


def repeated_over(trials: list[Trial]) -> str:
    """What the grouped trials repeat over: 'seeds', 'folds' or 'seeds and folds'."""
    swept = swept_keys(trials)
    return " and ".join(name for key, name in REPEAT_KEYS.items() if key in swept) or "seeds"


def group_repeats(trials: list[Trial], ignore: tuple[str, ...] = tuple(REPEAT_KEYS)) -> list[Group]:
    """Trials that differ only in `ignore` (seed, fold); empty unless some setting ran more than
    once."""
    keys = [k for k in swept_keys(trials) if k not in ignore]
    if not any(k in ignore for k in swept_keys(trials)):
        return []
    groups: dict[tuple[str, ...], Group] = {}
    for t in trials:
        values = {k: t.overrides.get(k, "") for k in keys}
        group = groups.setdefault(tuple(values.values()), Group(values, [], 0))
        if t.score is None:
            group.failed += 1
        else:
            group.trials.append(t)
    if all(len(g.trials) + g.failed < 2 for g in groups.values()):
        return []
    monitor = monitor_key(trials)
    sign = -1.0 if trials[0].mode == "max" else 1.0
    means = {id(g): g.stat(monitor)[0] for g in groups.values()}
    return sorted(groups.values(), key=lambda g: _best_first(means[id(g)], sign))


def _best_first(value: float | None, sign: float) -> tuple[bool, float]:
    return (value is None, sign * (value or 0.0))


def write_csv(path: Path, trials: list[Trial]) -> Path:
    """Every override key as a column (constant ones too), then status and every metric."""
    keys = list(dict.fromkeys(k for t in trials for k in t.overrides))
    metrics = [monitor_key(trials), *metric_keys(trials)]
    fields = ["trial", *keys, "status", *metrics, *RUN_FIELDS, "error"]
    with atomic_open(path, "w") as handle:
        writer = csv.DictWriter(handle, fields, lineterminator="\n")
        writer.writeheader()
        for t in rank(trials):
            row: dict[str, Any] = {"trial": t.name, **t.overrides, "status": t.status}
            row.update({k: metric(t, k) for k in metrics})
            row.update({k: t.results.get(k) for k in RUN_FIELDS})
            writer.writerow({**row, "error": t.error})
    return path


def grouped_metrics(trials: list[Trial]) -> list[str]:
    """best/<monitor> first, then the test metrics: what a grouped table reports."""
    return [monitor_key(trials), *(k for k in metric_keys(trials) if k.startswith("test/"))]


def write_groups_csv(path: Path, groups: list[Group], names: list[str]) -> Path:
    keys = list(groups[0].values)
    stats = [f"{n}_{s}" for n in names for s in ("mean", "std")]
    with atomic_open(path, "w") as handle:
        writer = csv.DictWriter(handle, [*keys, "n", "failed", *stats], lineterminator="\n")
        writer.writeheader()
        for g in groups:
            row: dict[str, Any] = {**g.values, "n": len(g.trials), "failed": g.failed}
            for name in names:
                row[f"{name}_mean"], row[f"{name}_std"] = g.stat(name)
            writer.writerow(row)
    return path


def fmt(value: float | None, digits: int | None = None) -> str:
    """A metric as the logs show it (1.600e-05, not 0.0000); counts and times with `digits`."""
    if value is None:
        return ""
    return show(value) if digits is None else f"{value:.{digits}f}"


def mean_std(stat: tuple[float | None, float | None]) -> str:
    mean, std = stat
    return fmt(mean) if std is None else f"{fmt(mean)} ± {fmt(std)}"
