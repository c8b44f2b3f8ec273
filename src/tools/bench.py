"""`make bench`: what the template costs, measured side by side in one process.

    python -m src.tools.bench [--quick] [--out outputs/bench]

1. per-step time: a hand-written PyTorch loop vs the Runner with its default features on
   (tqdm bars, device-side metrics, metrics.csv and TensorBoard every 50 steps, the epoch-end
   checkpoint), for the default CNN and a tiny MLP, on the same synthetic MNIST-shaped batches,
   timed from step 10 to the last step; the end-of-epoch work gets its own row;
2. the same model and data under Lightning's Trainer with its defaults and `self.log` each step,
   when `lightning` is installed (`pip install -e ".[bench]"`);
3. data throughput: torchvision's MNIST through a DataLoader with per-sample transforms vs the
   in-memory loader;
4. end to end: wall time and test accuracy of the default `python -m src.main` job.
Variants are interleaved (A B A B ...) and the median of the repeats is reported, so drifts in
machine speed hit both sides alike. Prints a table; writes bench.md and bench.csv; always exits 0.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from src.data.collate import NormalizeImages
from src.data.in_memory import InMemoryLoader
from src.model.cnn import CNN
from src.model.mlp import MLP
from src.reporting.logger import MetricLogger
from src.reporting.progress import Progress
from src.runner import Runner
from src.task.classification import Classification
from src.tools.bench_lightning import lightning_seconds_per_step
from src.training.checkpoint import Checkpointer
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
    return InMemoryLoader(images, labels, batch, NormalizeImages(0.1307, 0.3081), shuffle=True)


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


def hand_written(name: str, loader: InMemoryLoader) -> float:
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


def with_runner(name: str, loader: InMemoryLoader, folder: Path) -> tuple[float, float]:
    """One epoch through `Runner.fit` with the features of a default run switched on: bars,
    device-side metrics, metrics.csv + TensorBoard every 50 steps, the epoch-end checkpoint.
    Returns seconds per step and the end-of-epoch time (final validation and checkpoint)."""
    model, optimizer = fresh(name)
    clock = StepClock()
    with open(os.devnull, "w") as sink:
        runner = Runner(
            model,
            optimizer,
            Classification(),
            torch.device("cpu"),
            options=RunnerOptions(max_epochs=1, log_every_n_steps=50),
            checkpointer=Checkpointer(folder / "checkpoints"),
            logger=MetricLogger(folder),
            progress=Progress("bar", file=sink),
            on_step_end=[lambda r: clock.tick(r.state.step)],
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


def data_throughput(samples: int, repeats: int) -> list[Row]:
    """Samples/s of one pass: torchvision + DataLoader (per-sample PIL work) vs in-memory slices."""
    from torch.utils.data import DataLoader, Subset
    from torchvision import transforms
    from torchvision.datasets import MNIST

    with tempfile.TemporaryDirectory() as tmp:
        root = _mnist_root(Path(tmp))
        transform = transforms.Compose(
            [transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))]
        )
        dataset = Subset(MNIST(str(root), train=True, transform=transform), range(samples))
        torch_loader = DataLoader(dataset, batch_size=256, shuffle=True)
        base = MNIST(str(root), train=True)
        ours = InMemoryLoader(
            base.data, base.targets, 256, NormalizeImages(0.1307, 0.3081), shuffle=True
        )
        theirs_rate = statistics.median(_rate(torch_loader, samples) for _ in range(repeats))
        ours_rate = statistics.median(_rate(ours, len(ours) * 256) for _ in range(repeats))
    return [
        {
            "benchmark": "data: in-memory loader vs torchvision DataLoader",
            "baseline": f"{theirs_rate:,.0f} samples/s",
            "measured": f"{ours_rate:,.0f} samples/s",
            "ratio": f"{ours_rate / theirs_rate:.0f}x",
            "overhead": "",
        }
    ]


def _rate(loader: object, samples: int) -> float:
    start = time.perf_counter()
    for _ in loader:  # type: ignore[attr-defined]
        pass
    return samples / (time.perf_counter() - start)


def _mnist_root(tmp: Path) -> Path:
    """The real files when they are prepared under data/, synthetic IDX files otherwise."""
    if (Path("data") / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file():
        return Path("data")
    from src.data.idx import write_idx

    generator = torch.Generator().manual_seed(0)
    for split, n in (("train", 60000), ("t10k", 10000)):
        images = torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8, generator=generator)
        write_idx(tmp / "MNIST" / "raw" / f"{split}-images-idx3-ubyte", images.numpy())
        write_idx(
            tmp / "MNIST" / "raw" / f"{split}-labels-idx1-ubyte", (images[:, 0, 0] % 10).numpy()
        )
    return tmp


def end_to_end(repeats: int, extra: list[str]) -> list[Row]:
    """The default job as a user runs it, in a fresh process each time."""
    walls, accs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):
            cmd = [
                sys.executable,
                "-m",
                "src.main",
                f"hydra.run.dir={tmp}/run{r}",
                "runner.progress=none",
                *extra,
            ]
            start = time.perf_counter()
            result = subprocess.run(cmd, capture_output=True, text=True)
            walls.append(time.perf_counter() - start)
            if result.returncode != 0:
                return [
                    {
                        "benchmark": "end to end: default job",
                        "baseline": "",
                        "measured": "failed",
                        "ratio": "",
                        "overhead": result.stderr.strip()[-200:],
                    }
                ]
            accs.append(float(result.stdout.split("test/acc ")[1].split()[0]))
    return [
        {
            "benchmark": f"end to end: default job{' ' + ' '.join(extra) if extra else ''}",
            "baseline": "",
            "measured": f"{statistics.median(walls):.1f} s wall (median of {repeats})",
            "ratio": "",
            "overhead": "test acc " + ", ".join(f"{a:.4f}" for a in accs),
        }
    ]


COLUMNS = ["benchmark", "baseline", "measured", "ratio", "overhead"]


def write_table(rows: list[Row], out: Path) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    lines += ["| " + " | ".join(row[c] for c in COLUMNS) + " |" for row in rows]
    table = "\n".join(lines)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.md").write_text(table + "\n")
    with open(out / "bench.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats (~1 minute)")
    parser.add_argument("--out", default="outputs/bench", help="folder for bench.md and bench.csv")
    args = parser.parse_args()
    # (steps per epoch, Runner repeats, Lightning repeats): many short repeats beat a few long ones
    plan = {
        "cnn": (40, 3, 3) if args.quick else (40, 61, 7),
        "tiny-mlp": (214, 9, 3) if args.quick else (214, 81, 11),
    }
    repeats = 3 if args.quick else 5
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; {repeats} repeats, medians"
    )
    rows: list[Row] = []
    for name, (steps, pairs, triplets) in plan.items():
        rows += compare_loops(name, steps, pairs, triplets)
        print(f"done: {name} ({steps} steps per repeat)", flush=True)
    rows += data_throughput(10000 if args.quick else 30000, repeats)
    rows += end_to_end(1 if args.quick else 3, ["runner.max_epochs=1"] if args.quick else [])
    print(write_table(rows, Path(args.out)))
    print(f"written to {args.out}/bench.md and bench.csv")


if __name__ == "__main__":
    main()
