"""The end of a run: results.json, curves.png and the line a person reads in the terminal."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from src.common.files import atomic_write_json
from src.reporting.numbers import show
from src.reporting.plots import plot_curves

log = logging.getLogger(__name__)


def final_line(results: dict[str, Any], prefix: str = "test/") -> str:
    """'test/loss 0.0246  test/acc 0.9924': every metric of the split but the sample count."""
    return "  ".join(
        f"{key} {show(value)}"
        for key, value in results.items()
        if key.startswith(prefix) and not key.endswith("/samples")
    )


def write_results(run_dir: Path, results: dict[str, Any]) -> None:
    atomic_write_json(run_dir / "results.json", results)
    if (run_dir / "metrics.csv").exists():
        plot_curves(run_dir / "metrics.csv", run_dir / "curves.png")
    line = final_line(results)
    log.info("%s", line)
    print(f"{line}  run directory {run_dir}")
