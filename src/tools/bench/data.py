"""Data throughput (the in-memory loader against torchvision's DataLoader) and the default job
end to end, in a fresh process each time."""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from src.data.collate import NormalizeImages
from src.data.in_memory import InMemoryLoader
from src.data.mnist import MNIST_MEAN, MNIST_STD
from src.tools.bench.loops import Row


def data_throughput(samples: int, repeats: int) -> list[Row]:
    """Samples/s of one pass: torchvision + DataLoader (per-sample PIL work) vs in-memory slices."""
    from torch.utils.data import DataLoader, Subset
    from torchvision import transforms
    from torchvision.datasets import MNIST

    with tempfile.TemporaryDirectory() as tmp:
        root = _mnist_root(Path(tmp))
        transform = transforms.Compose(
            [transforms.ToTensor(), transforms.Normalize((MNIST_MEAN,), (MNIST_STD,))]
        )
        dataset = Subset(MNIST(str(root), train=True, transform=transform), range(samples))
        torch_loader = DataLoader(dataset, batch_size=256, shuffle=True)
        base = MNIST(str(root), train=True)
        ours = InMemoryLoader(
            base.data, base.targets, 256, NormalizeImages(MNIST_MEAN, MNIST_STD), shuffle=True
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
