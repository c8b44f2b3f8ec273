"""curves.png: one panel per metric in metrics.csv (train and validation against steps)."""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt

from src.common.files import atomic_open

NOT_PLOTTED = {"step", "epoch", "split", "samples_per_s"}  # throughput is in the log lines


def plot_curves(metrics_csv: str | Path, out_png: str | Path) -> Path:
    with open(metrics_csv, newline="") as handle:
        reader = csv.DictReader(handle)
        metrics = [f for f in reader.fieldnames or [] if f not in NOT_PLOTTED]
        rows = list(reader)
    series: dict[tuple[str, str], list[tuple[int, float]]] = defaultdict(list)
    for row in rows:
        for metric in metrics:
            if row.get(metric):
                series[(row["split"], metric)].append((int(row["step"]), float(row[metric])))
    metrics = [m for m in metrics if any((s, m) in series for s in ("train", "val"))]
    fig, axes = plt.subplots(1, max(len(metrics), 1), figsize=(3.8 * max(len(metrics), 1), 3.4))
    for ax, metric in zip(axes if len(metrics) > 1 else [axes], metrics):
        values: list[float] = []
        for split, style in (("train", "-"), ("val", "o-")):
            points = series.get((split, metric))
            if points:
                steps, ys = zip(*points)
                values += ys
                ax.plot(steps, ys, style, label=split, markersize=4)
        if metric in ("loss", "lr") and values and min(values) > 0 and _spans_decades(values):
            ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    out_png = Path(out_png)
    with atomic_open(out_png, "wb") as handle:
        fig.savefig(handle, format="png", dpi=100)
    plt.close(fig)
    return out_png


def _spans_decades(values: list[float]) -> bool:
    finite = [v for v in values if math.isfinite(v)]
    return bool(finite) and max(finite) / min(finite) > 10


if __name__ == "__main__":
    import sys

    run_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(".")
    print(plot_curves(run_dir / "metrics.csv", run_dir / "curves.png"))
