"""Summarise a multirun folder: summary.csv, summary.md, summary.png (and summary_groups.csv).

Runs by itself at the end of every multirun (`SweepSummary`, a Hydra callback listed under
`hydra.callbacks` in config.yaml) and on demand:

    python -m src.sweep.summary multirun/2024-05-01/12-00-00     (make summary DIR=...)

A sweep in which any trial failed or was stopped ends with exit code 4 and a line saying which;
summary.md lists them with their errors.

This module is imported by Hydra at every start, so it imports nothing heavy at the top.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from src.common.files import atomic_open, atomic_path
from src.sweep.collect import SETTLED, Trial, collect
from src.sweep.markdown import summary_markdown
from src.sweep.table import (
    group_repeats,
    grouped_metrics,
    swept_keys,
    write_csv,
    write_groups_csv,
)

log = logging.getLogger(__name__)


def write_summary(sweep_dir: str | Path) -> list[Path]:
    """Write the summary files into `sweep_dir`; returns their paths (none without trials)."""
    sweep_dir = Path(sweep_dir)
    trials = collect(sweep_dir)
    if not trials:
        return []
    groups = group_repeats(trials)
    written = [write_csv(sweep_dir / "summary.csv", trials)]
    if groups:
        names = grouped_metrics(trials)
        written.append(write_groups_csv(sweep_dir / "summary_groups.csv", groups, names))
    text = summary_markdown(str(sweep_dir), trials, groups, _optuna_results(sweep_dir))
    with atomic_open(sweep_dir / "summary.md", "w") as handle:
        handle.write(text)
    written.append(sweep_dir / "summary.md")
    from src.sweep.plot import plot_summary  # matplotlib: only when there is something to draw

    with atomic_path(sweep_dir / "summary.png") as png:
        plot_summary(trials, swept_keys(trials), png)
    written.append(sweep_dir / "summary.png")
    return written


def incomplete(trials: list[Trial]) -> str:
    """'' when every trial completed (or was pruned, or ran again), else a line naming the
    others."""
    others = [t for t in trials if t.status not in SETTLED]
    if not others:
        return ""
    names = ", ".join(f"{t.name} ({t.status})" for t in others)
    return f"{len(others)} of {len(trials)} trials did not complete: {names}"


def _optuna_results(sweep_dir: Path) -> dict[str, Any] | None:
    """The Optuna sweeper's own verdict (optimization_results.yaml), when there is one."""
    path = sweep_dir / "optimization_results.yaml"
    return yaml.safe_load(path.read_text()) if path.is_file() else None


class SweepSummary(Callback):
    """Hydra callback: summarise the sweep folder once every trial has run."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            written = write_summary(sweep_dir)
        except Exception:  # the trials' results are safe; `make summary` can retry
            log.exception("could not summarise %s", sweep_dir)
            return
        if written:
            print(_headline(sweep_dir / "summary.md"))
            print(f"sweep summary: {', '.join(str(p) for p in written)}")
        problem = incomplete(collect(sweep_dir))
        if problem:
            from src.launch.cli import SWEEP_INCOMPLETE  # torch: only when it is needed

            print(f"error: {problem} (see {sweep_dir / 'summary.md'})", file=sys.stderr)
            sys.exit(SWEEP_INCOMPLETE)


def _headline(summary_md: Path) -> str:
    """The verdict line of summary.md ('Best trial: ...'), for the terminal."""
    lines = summary_md.read_text().splitlines()
    return next((line.replace("**", "") for line in lines if line.startswith("**")), "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="a multirun folder (holds 0/, 1/, ...)")
    sweep_dir = parser.parse_args().sweep_dir
    if not sweep_dir.is_dir():
        parser.exit(2, f"error: {sweep_dir} is not a folder\n")
    written = write_summary(sweep_dir)
    if not written:
        parser.exit(2, f"error: no trial folders (*/.hydra/overrides.yaml) in {sweep_dir}\n")
    print(_headline(sweep_dir / "summary.md"))
    print("\n".join(str(p) for p in written))


if __name__ == "__main__":
    main()
