"""Per-step time: a hand-written PyTorch loop, the Runner, and Lightning's Trainer, interleaved.

Every variant trains the same model on the same synthetic MNIST-shaped batches and is timed from
step SKIP to the last step; the rows give medians of the repeat-by-repeat ratios.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from src.data.collate import NormalizeImages
from src.data.in_memory import InMemoryLoader
from src.data.mnist import MNIST_MEAN, MNIST_STD
from src.model.cnn import CNN
from src.model.mlp import MLP
from src.reporting.logger import MetricLogger
from src.reporting.progress import Progress
from src.reporting.tensorboard import TensorBoardTracker
from src.runner import Runner
from src.task.classification import Classification
from src.tools.bench.lightning import lightning_seconds_per_step
from src.training.callbacks import Callback, OnStepEnd
from src.training.checkpoint import Checkpointer
from src.training.ema import EMA
from src.training.options import RunnerOptions

Row = dict[str, str]
MODELS: dict[str, Callable[[], nn.Module]] = {
    "cnn": lambda: CNN().to(memory_format=torch.channels_last),
    "tiny-mlp": lambda: MLP(hidden=[32]),
}


def synthetic_loader(steps: int, batch: int = 256) -> InMemoryLoader:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (steps * batch, 28, 28), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 10, (steps * batch,), generator=generator)
    return InMemoryLoader(
        images, labels, batch, NormalizeImages(MNIST_MEAN, MNIST_STD), shuffle=True
    )


def fresh(name: str) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = MODELS[name]()
    return model, torch.optim.AdamW(model.parameters(), lr=1e-3)


SKIP = 10  # steps left out of every timing: warm-up, like the Lightning clock


class StepClock:
    """Seconds per step from step SKIP to the last step (start-up and teardown excluded)."""

    def __init__(self) -> None:
        self.start = self.end = 0.0
        self.steps = 0

    def tick(self, step: int) -> None:
        self.end = time.perf_counter()
        if step == SKIP:
            self.start, self.steps = self.end, 0
        self.steps += 1

    @property
    def per_step(self) -> float:
        return (self.end - self.start) / max(self.steps - 1, 1)


def hand_written(name: str, loader: Iterable[Any]) -> float:
    """The loop a person would write by hand: the baseline every other row is compared with."""
    model, optimizer = fresh(name)
    criterion = nn.CrossEntropyLoss()
    model.train()
    clock = StepClock()
    for step, (inputs, targets) in enumerate(loader, start=1):
        loss = criterion(model(inputs), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        clock.tick(step)
    return clock.per_step


def with_runner(
    name: str, loader: Any, folder: Path, ema_decay: float = 0.0
) -> tuple[float, float]:
    """One epoch through `Runner.fit` with the features of a default run switched on: bars,
    device-side metrics, metrics.csv + TensorBoard every 50 steps, the epoch-end checkpoint
    (and an EMA of the weights when `ema_decay` > 0). Returns seconds per step and the
    end-of-epoch time (final validation and checkpoint)."""
    model, optimizer = fresh(name)
    clock = StepClock()
    callbacks: list[Callback] = [OnStepEnd(lambda r: clock.tick(r.state.step))]
    if ema_decay > 0:
        callbacks.insert(0, EMA(model, ema_decay))
    with open(os.devnull, "w") as sink:
        runner = Runner(
            model,
            optimizer,
            Classification(),
            torch.device("cpu"),
            options=RunnerOptions(max_epochs=1, log_every_n_steps=50),
            checkpointer=Checkpointer(folder / "checkpoints"),
            logger=MetricLogger(folder, trackers=[TensorBoardTracker(folder)]),
            progress=Progress("bar", file=sink),
            callbacks=callbacks,
        )
        runner.fit(loader, [])
        end_of_epoch = time.perf_counter() - clock.end
    runner.logger.close()
    return clock.per_step, end_of_epoch


def interleaved(runs: dict[str, Callable[[int], float]], repeats: int) -> dict[str, list[float]]:
    """Time every variant once per repeat, rotating their order, so that drifts in machine
    speed and order effects hit all of them alike; compare them repeat by repeat."""
    names = list(runs)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            times[name].append(runs[name](r))
    return times


def compare_loops(name: str, steps: int, repeats: int, lightning_repeats: int) -> list[Row]:
    """Runner vs hand-written loop over `repeats` pairs; then Lightning against both over
    `lightning_repeats` triplets (it is slow to start, so it gets fewer)."""
    loader = synthetic_loader(steps)
    hand_written(name, loader)  # warm-up: allocator, kernels, caches
    tails: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)

        def runner(r: int) -> float:
            per_step, tail = with_runner(name, loader, folder / f"runner{r}")
            tails.append(tail)
            return per_step

        def lightning(r: int) -> float | None:
            return lightning_seconds_per_step(fresh(name)[0], loader, folder / f"pl{r}")

        runner(-1)  # warm-up: the first run also imports TensorBoard in its writer thread
        tails.clear()
        runs: dict[str, Callable[[int], float]] = {
            "hand": lambda r: hand_written(name, loader),
            "runner": runner,
        }
        times = interleaved(runs, repeats)
        rows = [
            loop_row(f"{name}: Runner vs hand-written loop", times["hand"], times["runner"]),
            unavailable(f"{name}: Runner end of epoch (validate, checkpoint, wait for fsync)", "")
            | {"measured": f"{statistics.median(tails) * 1e3:.1f} ms once per epoch"},
        ]
        if lightning(-1) is None:  # not installed (else: that was its warm-up)
            return [*rows, unavailable(f"{name}: Lightning Trainer", "not installed")]
        runs["lightning"] = lambda r: lightning(r) or 0.0
        times = interleaved(runs, lightning_repeats)
    rows.append(
        loop_row(f"{name}: Lightning vs hand-written loop", times["hand"], times["lightning"])
    )
    rows.append(loop_row(f"{name}: Lightning vs Runner", times["runner"], times["lightning"]))
    return rows


def compare_ema(name: str, steps: int, repeats: int) -> list[Row]:
    """The Runner with an EMA of the weights (decay 0.999) against the Runner without one."""
    loader = synthetic_loader(steps)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        with_runner(name, loader, folder / "warm-up", ema_decay=0.999)
        runs: dict[str, Callable[[int], float]] = {
            "runner": lambda r: with_runner(name, loader, folder / f"plain{r}")[0],
            "ema": lambda r: with_runner(name, loader, folder / f"ema{r}", 0.999)[0],
        }
        times = interleaved(runs, repeats)
    return [loop_row(f"{name}: Runner with EMA vs without", times["runner"], times["ema"])]


def unavailable(label: str, why: str) -> Row:
    return {"benchmark": label, "baseline": "-", "measured": why, "ratio": "-", "overhead": "-"}


def loop_row(label: str, base: list[float], other: list[float]) -> Row:
    """Medians of each side, and the medians of the repeat-by-repeat ratios and differences."""
    ratio = statistics.median(o / b for b, o in zip(base, other))
    extra = statistics.median(o - b for b, o in zip(base, other))
    return {
        "benchmark": label,
        "baseline": f"{statistics.median(base) * 1e3:.3f} ms/step",
        "measured": f"{statistics.median(other) * 1e3:.3f} ms/step",
        "ratio": f"{ratio:.3f}",
        "overhead": f"{extra * 1e6:+.0f} µs/step ({(ratio - 1) * 100:+.1f}%)",
    }
