"""curves.png: training and validation loss and accuracy against optimizer steps."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt

from src.reporting.logger import read_metrics


def plot_curves(metrics_csv: str | Path, out_png: str | Path) -> Path:
    series: dict[tuple[str, str], list[tuple[int, float]]] = defaultdict(list)
    for row in read_metrics(metrics_csv):
        for metric in ("loss", "acc"):
            if row.get(metric):
                series[(row["split"], metric)].append((int(row["step"]), float(row[metric])))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, metric in zip(axes, ("loss", "acc")):
        for split, style in (("train", "-"), ("val", "o-")):
            points = series.get((split, metric))
            if points:
                steps, values = zip(*points)
                ax.plot(steps, values, style, label=split, markersize=4)
        ax.set_xlabel("step")
        ax.set_title("loss" if metric == "loss" else "accuracy")
        ax.grid(alpha=0.3)
        ax.legend()
    axes[0].set_yscale("log")
    fig.tight_layout()
    out_png = Path(out_png)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png


if __name__ == "__main__":
    import sys

    run_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(".")
    print(plot_curves(run_dir / "metrics.csv", run_dir / "curves.png"))
