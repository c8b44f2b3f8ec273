"""summary.png: the monitored metric against each swept parameter, and every validation curve.

One panel per swept override (a log axis when its values are spaced geometrically, e.g. learning
rates; categories for words such as model=cnn,mlp), each trial a dot and the mean per value a
line; the last panel overlays the trials' validation curves of the monitored metric.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from src.sweep.collect import Trial, as_number

MAX_LEGEND = 10  # more curves than this: no legend (it would hide the plot)


def log_scaled(values: list[float]) -> bool:
    """Geometric spacing (0.001, 0.01, 0.1 or 64, 128, 256) reads best on a log axis."""
    distinct = sorted(set(values))
    if len(distinct) < 2 or distinct[0] <= 0:
        return False
    if len(distinct) == 2:
        return distinct[1] / distinct[0] >= 3
    linear, geometric = np.diff(distinct), np.diff(np.log(distinct))
    return bool(_spread(geometric) < _spread(linear))


def _spread(steps: np.ndarray) -> float:
    return float(np.std(steps) / np.mean(steps))


def plot_summary(trials: list[Trial], keys: list[str], out_png: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only; imported here so that Hydra's callback loads fast
    import matplotlib.pyplot as plt

    done = [t for t in trials if t.score is not None]
    fig, axes = plt.subplots(1, len(keys) + 1, figsize=(3.6 * (len(keys) + 1), 3.4), squeeze=False)
    monitor = f"best/{trials[0].monitor}" if trials else "best"
    for ax, key in zip(axes[0], keys):
        _metric_against(ax, done, key, monitor)
    _curves(axes[0][-1], done, keys, trials[0].monitor if trials else "val")
    if not done:
        fig.suptitle("no trial completed")
    fig.tight_layout()
    fig.savefig(out_png, dpi=90)
    plt.close(fig)
    return out_png


def _metric_against(ax, trials: list[Trial], key: str, monitor: str) -> None:
    raw = [t.overrides.get(key, "") for t in trials]
    numbers = [as_number(v) for v in raw]
    scores = [t.score or 0.0 for t in trials]
    if trials and all(n is not None for n in numbers):
        xs = [float(n or 0.0) for n in numbers]
        if log_scaled(xs):
            ax.set_xscale("log")
        ticks = dict(sorted(zip(xs, raw)))
        if len(ticks) <= 8:  # label the swept values themselves, as they were typed
            ax.minorticks_off()
            ax.set_xticks(list(ticks), list(ticks.values()))
    else:  # words or mixed: one position per distinct value, in order of appearance
        labels = list(dict.fromkeys(raw))
        xs = [float(labels.index(v)) for v in raw]
        ax.set_xticks(range(len(labels)), labels, rotation=30 if len(labels) > 3 else 0)
    ax.scatter(xs, scores, s=22, alpha=0.7)
    means = sorted(
        {x: float(np.mean([s for x2, s in zip(xs, scores) if x2 == x])) for x in xs}.items()
    )
    if len(means) > 1:
        ax.plot(*zip(*means), "-", alpha=0.6)
    ax.set_xlabel(key)
    ax.set_ylabel(monitor)
    ax.grid(alpha=0.3)


def _curves(ax, trials: list[Trial], keys: list[str], monitor: str) -> None:
    for t in trials:
        if t.curve:
            steps, values = zip(*t.curve)
            label = " ".join(f"{k.split('.')[-1]}={t.overrides.get(k, '')}" for k in keys)
            ax.plot(steps, values, "o-", markersize=3, label=f"{t.name}: {label}")
    ax.set_xlabel("step")
    ax.set_ylabel(monitor)
    ax.set_title("validation curves")
    ax.grid(alpha=0.3)
    if 0 < len(trials) <= MAX_LEGEND:
        ax.legend(fontsize=7)
