"""summary.png: the monitored metric against each swept parameter, and the trials' curves.

One panel per swept override (a log axis when its values are spaced geometrically, e.g. learning
rates; categories for words such as model=cnn,mlp), each setting a dot (the mean over its seeds
or folds, with an error bar) and the mean per value a line; the last panel overlays the trials'
validation curves of the monitored metric, or their training loss when each validated only once.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from src.common.files import atomic_open
from src.sweep.collect import Trial, as_number
from src.sweep.table import REPEAT_KEYS, repeated_over

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
    """One panel per swept parameter (seeds and folds are repeats, not a parameter: each setting
    is its mean over them, with the standard deviation as an error bar), then the curves panel."""
    import matplotlib

    matplotlib.use("Agg")  # files only; imported here so that Hydra's callback loads fast
    import matplotlib.pyplot as plt

    done = [t for t in trials if t.score is not None]
    axes_keys = panel_keys(keys)
    fig, axes = plt.subplots(
        1, len(axes_keys) + 1, figsize=(3.6 * (len(axes_keys) + 1), 3.4), squeeze=False
    )
    monitor = f"best/{trials[0].monitor}" if trials else "best"
    settings = _mean_over_seeds(done, axes_keys)
    label = f"{monitor} (mean ± std over {repeated_over(trials)})"
    for ax, key in zip(axes[0], axes_keys):
        _metric_against(ax, settings, key, monitor, label)
    _curves(axes[0][-1], done, axes_keys, trials[0].monitor if trials else "val")
    if not done:
        fig.suptitle("no trial completed")
    fig.tight_layout()
    with atomic_open(out_png, "wb") as handle:
        fig.savefig(handle, format="png", dpi=90)
    plt.close(fig)
    return out_png


def panel_keys(keys: list[str]) -> list[str]:
    """The swept keys that get a panel: all but seeds and folds, which are averaged over."""
    return [k for k in keys if k not in REPEAT_KEYS]


Setting = tuple[dict[str, str], float, float]  # overrides, mean score, std over repeats (0: one)


def _mean_over_seeds(trials: list[Trial], keys: list[str]) -> list[Setting]:
    """Trials that differ only in their seed or fold, as one point: mean and std of their
    scores."""
    groups: dict[tuple[str, ...], list[Trial]] = {}
    for t in trials:
        groups.setdefault(tuple(t.overrides.get(k, "") for k in keys), []).append(t)
    settings = []
    for values, members in groups.items():
        scores = [t.score or 0.0 for t in members]
        std = float(np.std(scores, ddof=1)) if len(scores) > 1 else 0.0
        settings.append((dict(zip(keys, values)), float(np.mean(scores)), std))
    return settings


def _metric_against(ax, settings: list[Setting], key: str, monitor: str, label: str) -> None:
    raw = [overrides.get(key, "") for overrides, _, _ in settings]
    numbers = [as_number(v) for v in raw]
    means = [mean for _, mean, _ in settings]
    stds = [std for _, _, std in settings]
    if settings and all(n is not None for n in numbers):
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
    ax.errorbar(xs, means, yerr=stds if any(stds) else None, fmt="o", ms=4, alpha=0.75, capsize=3)
    trend = sorted(
        {x: float(np.mean([m for x2, m in zip(xs, means) if x2 == x])) for x in xs}.items()
    )
    if len(trend) > 1:
        ax.plot(*zip(*trend), "-", alpha=0.6)
    ax.set_xlabel(key)
    ax.set_ylabel(label if any(stds) else monitor)
    ax.grid(alpha=0.3)


def _curves(ax, trials: list[Trial], keys: list[str], monitor: str) -> None:
    """Validation curves of the monitored metric; the training loss when the trials validated
    once each (a single point per trial says nothing about a curve)."""
    validation = any(len(t.curve) > 1 for t in trials)
    drawn = 0
    for t in trials:
        points = t.curve if validation else t.train_loss
        if points:
            drawn += 1
            steps, values = zip(*points)
            label = " ".join(f"{k.split('.')[-1]}={t.overrides.get(k, '')}" for k in keys)
            ax.plot(steps, values, "o-" if validation else "-", markersize=3, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel(monitor if validation else "training loss")
    ax.set_title("validation curves" if validation else "training loss (one validation each)")
    ax.grid(alpha=0.3)
    if 0 < drawn <= MAX_LEGEND:
        ax.legend(fontsize=7)
