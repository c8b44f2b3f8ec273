"""summary.md: which setting won and by how much, then the tables a reader checks it with."""

from __future__ import annotations

from collections import Counter
from typing import Any

from src.sweep.collect import FINISHED, Trial, as_number
from src.sweep.table import (
    Group,
    fmt,
    grouped_metrics,
    mean_std,
    metric,
    metric_keys,
    monitor_key,
    rank,
    repeated_over,
    swept_keys,
)


def summary_markdown(
    title: str, trials: list[Trial], groups: list[Group], optuna: dict[str, Any] | None = None
) -> str:
    keys, ranked = swept_keys(trials), rank(trials)
    monitor = monitor_key(trials)
    better = "higher" if trials[0].mode == "max" else "lower"
    counts = ", ".join(f"{n} {status}" for status, n in Counter(t.status for t in trials).items())
    lines = [f"# Sweep summary: {title}", ""]
    lines.append(f"{len(trials)} trials ({counts}), ranked by `{monitor}` ({better} is better).")
    common = _common_overrides(trials, keys)
    if common:
        lines.append(f"Same in every trial: {common}.")
    lines += ["", *_verdict(ranked, groups, keys, monitor, repeated_over(trials)), ""]
    lines += _trial_table(ranked, keys, [monitor, *metric_keys(trials)])
    if groups:
        over = repeated_over(trials)
        lines += ["", f"## Grouped over {over} (mean ± std, n = completed trials)", ""]
        lines += _group_table(groups, grouped_metrics(trials))
    failed = [t for t in trials if t.status not in FINISHED]
    if failed:
        lines += ["", "## Trials that did not complete", ""]
        lines += [f"- trial {t.name} ({t.status}): {t.error or 'no results.json'}" for t in failed]
    if optuna and "best_params" in optuna:  # a study without a complete trial has no best
        params = ", ".join(f"`{k}={v}`" for k, v in optuna["best_params"].items())
        lines += ["", f"Optuna's best: {params} with value {optuna.get('best_value')}."]
    return "\n".join(lines) + "\n"


def _verdict(
    ranked: list[Trial], groups: list[Group], keys: list[str], monitor: str, over: str
) -> list[str]:
    scored = [t for t in ranked if t.score is not None]
    if not scored:
        return ["No trial completed."]
    best = scored[0]
    line = f"**Best trial: {best.name}** ({_setting(best.overrides, keys)}), "
    line += f"{monitor} {fmt(best.score)}"
    if len(scored) > 1:
        gap = abs((best.score or 0.0) - (scored[1].score or 0.0))
        line += (
            f", {fmt(gap)} ahead of trial {scored[1].name} ({_setting(scored[1].overrides, keys)})"
        )
    lines = [line + "."]
    done = [g for g in groups if g.trials]
    if done:
        top = done[0]
        mean, std = top.stat(monitor)
        if top.values:
            text = f"**Best setting over {over}:** {_setting(top.values, list(top.values))}, "
        else:  # one setting repeated: nothing to compare it with
            text = f"**Over {over}:** "
        text += f"{monitor} {mean_std((mean, std))} (n={len(top.trials)})"
        if len(done) > 1:
            gap = abs((mean or 0.0) - (done[1].stat(monitor)[0] or 0.0))
            text += f", {fmt(gap)} ahead of {_setting(done[1].values, list(done[1].values))}"
        lines += ["", text + "."]
    return lines


def _trial_table(ranked: list[Trial], keys: list[str], metrics: list[str]) -> list[str]:
    header = ["rank", "trial", *keys, "status", *metrics, "epochs", "wall (s)"]
    rows = []
    for i, t in enumerate(ranked, 1):
        numbers = [fmt(metric(t, k)) for k in metrics]
        run = [fmt(metric(t, "epochs"), 2), fmt(metric(t, "wall_time_s"), 1)]
        overrides = [short(t.overrides.get(k, "")) for k in keys]
        rank_cell = str(i) if t.score is not None else "-"
        rows.append([rank_cell, t.name, *overrides, t.status, *numbers, *run])
    return _table(header, rows)


def _group_table(groups: list[Group], metrics: list[str]) -> list[str]:
    keys = list(groups[0].values)
    header = [*keys, "n", "failed", *metrics]
    rows = []
    for g in groups:
        stats = [mean_std(g.stat(k)) for k in metrics]
        rows.append([*map(short, g.values.values()), str(len(g.trials)), str(g.failed), *stats])
    return _table(header, rows)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return [line(header), line(["---"] * len(header)), *map(line, rows)]


def short(value: str) -> str:
    """Sampled numbers (Optuna) to 4 significant digits; typed values stay as typed."""
    number = as_number(value)
    return f"{number:.4g}" if number is not None and len(value) > 8 else value


def _setting(overrides: dict[str, str], keys: list[str]) -> str:
    return ", ".join(f"`{k}={short(overrides.get(k, ''))}`" for k in keys) or "no overrides"


def _common_overrides(trials: list[Trial], keys: list[str]) -> str:
    first = trials[0].overrides
    same = [
        k for k in first if k not in keys and all(t.overrides.get(k) == first[k] for t in trials)
    ]
    return ", ".join(f"`{k}={first[k]}`" for k in same)
