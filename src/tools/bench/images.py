"""`make bench` rows for `data=image_folder`, on the MNIST PNG folder (`make export-mnist`).

- images/s of the first epoch (which decodes the files into a fresh cache) and of later epochs,
  against torchvision's `ImageFolder` + `DataLoader` (2 workers, the same transforms per sample:
  random resized crop, normalisation), interleaved, medians;
- with a GPU: later epochs with the augmentation on the device;
- the loader's share of a training step of the default CNN: the time the loop waits for the next
  batch, and the step time against the in-memory MNIST loader;
- Runner overhead over a hand-written loop, both on the same image-folder `DataLoader`.
"""

from __future__ import annotations

import itertools
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from src.data.augment import AugmentOptions, torchvision_transforms
from src.data.export_mnist import export_mnist
from src.data.image_folder import build_loaders
from src.data.mnist import build_loaders as mnist_loaders
from src.model.cnn import CNN
from src.tools.bench.loops import (
    Row,
    hand_written,
    interleaved,
    loop_row,
    unavailable,
    with_runner,
)

FOLDER = Path("data/mnist_png")
BATCH = 256


class FirstBatches:
    """The first `n` batches of a loader, as a loader (with `len` and `set_epoch`)."""

    def __init__(self, loader: Any, n: int) -> None:
        self.loader, self.n = loader, n

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.loader.set_epoch(epoch, start_batch)

    def __len__(self) -> int:
        return min(self.n, len(self.loader))

    def __iter__(self) -> Iterator[Any]:
        return itertools.islice(iter(self.loader), len(self))


def image_folder_rows(quick: bool) -> list[Row]:
    if FOLDER.is_dir():
        return _rows(FOLDER, quick)
    if not Path("data/MNIST/raw/train-images-idx3-ubyte").is_file():
        return [unavailable("image_folder rows", "no data/MNIST: run `make run` once")]
    with tempfile.TemporaryDirectory(dir="data") as tmp:  # exported for this run only
        return _rows(export_mnist(Path(tmp) / "mnist_png", "data"), quick)


def _rows(folder: Path, quick: bool) -> list[Row]:
    with tempfile.TemporaryDirectory() as cache:
        started = time.perf_counter()
        data = build_loaders(str(folder), BATCH, 1000, cache_dir=cache)
        n = len(data.train) * BATCH
        first = n / (time.perf_counter() - started + _seconds(data.train, epoch=0))
        rows = throughput_rows(folder, data, first, repeats=2 if quick else 5)
        if torch.cuda.is_available():
            rows.append(gpu_row(folder, cache))
        rows += loader_share_rows(data, steps=25, repeats=3 if quick else 9)
        rows.append(runner_on_dataloader_row(data, repeats=5 if quick else 21))
    return rows


def _seconds(loader: Any, epoch: int) -> float:
    """Seconds of one pass over the loader (of epoch `epoch` where the loader has epochs)."""
    if hasattr(loader, "set_epoch"):
        loader.set_epoch(epoch)
    started = time.perf_counter()
    for _ in loader:
        pass
    return time.perf_counter() - started


def _grey(path: str) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("L")


def throughput_rows(folder: Path, data: Any, first: float, repeats: int) -> list[Row]:
    from torch.utils.data import DataLoader, Subset
    from torchvision.datasets import ImageFolder

    mean, std = data.info["mean"], data.info["std"]
    transform = torchvision_transforms(28, mean, std, AugmentOptions())
    dataset = ImageFolder(str(folder / "train"), transform=transform, loader=_grey)
    subset = Subset(dataset, torch.randperm(len(dataset))[:10_240].tolist())
    theirs = DataLoader(subset, batch_size=BATCH, shuffle=True, num_workers=2)
    n = len(data.train) * BATCH
    rates = interleaved(
        {
            "ours": lambda r: n / _seconds(data.train, epoch=r + 1),
            "torchvision": lambda r: len(subset) / _seconds(theirs, epoch=0),
        },
        repeats,
    )
    base = statistics.median(rates["torchvision"])
    ours = statistics.median(rates["ours"])
    return [
        _rate_row(
            "image_folder first epoch (decodes into a new cache) vs torchvision", base, first
        ),
        _rate_row("image_folder later epochs (cached, augmented) vs torchvision", base, ours),
    ]


def _rate_row(label: str, base: float, measured: float) -> Row:
    return {
        "benchmark": label,
        "baseline": f"{base:,.0f} images/s",
        "measured": f"{measured:,.0f} images/s",
        "ratio": f"{measured / base:.1f}x",
        "overhead": "",
    }


def gpu_row(folder: Path, cache: str) -> Row:
    data = build_loaders(str(folder), BATCH, 1000, cache_dir=cache, device="cuda")
    _seconds(data.train, epoch=0)  # warm-up: workers, kernels
    seconds = []
    for epoch in (1, 2, 3):
        torch.cuda.synchronize()
        seconds.append(_seconds(data.train, epoch))
        torch.cuda.synchronize()
    rate = len(data.train) * BATCH / statistics.median(seconds)
    row = unavailable(f"image_folder later epochs, augmented on {torch.cuda.get_device_name()}", "")
    return row | {"measured": f"{rate:,.0f} images/s"}


def loader_share_rows(data: Any, steps: int, repeats: int) -> list[Row]:
    """The default CNN trained for `steps` steps on the image-folder loader (timing the wait for
    each batch) and on the in-memory MNIST loader, interleaved `repeats` times."""
    memory = mnist_loaders("data", BATCH, 1000, 5000, 0).train
    waits: list[float] = []

    def on_images(r: int) -> float:
        step, waited = _train(data.train, steps, epoch=r)
        waits.append(waited)
        return step

    times = interleaved(
        {"memory": lambda r: _train(memory, steps, epoch=r)[0], "images": on_images}, repeats
    )
    step = statistics.median(times["images"])
    share = statistics.median(w / s for w, s in zip(waits, times["images"]))
    return [
        unavailable("image_folder: loader's share of a default CNN training step", "")
        | {
            "baseline": f"{step * 1e3:.1f} ms/step",
            "measured": f"{statistics.median(waits) * 1e3:.2f} ms waiting for a batch",
            "ratio": f"{share:.3f}",
            "overhead": f"{share * 100:.1f}% of the step",
        },
        loop_row(
            "image_folder vs in-memory MNIST: default CNN step", times["memory"], times["images"]
        ),
    ]


def _train(loader: Any, steps: int, epoch: int) -> tuple[float, float]:
    """The median step time of the default CNN over the loader's first `steps` batches (the
    first 5 left out), and the median time of those steps spent waiting for the batch."""
    torch.manual_seed(0)
    model = CNN().to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    criterion = nn.CrossEntropyLoss()
    loader.set_epoch(epoch)
    batches = iter(FirstBatches(loader, steps))
    waits, totals = [], []
    while True:
        started = time.perf_counter()
        batch = next(batches, None)
        got = time.perf_counter()
        if batch is None:
            break
        inputs, targets = batch
        loss = criterion(model(inputs), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        waits.append(got - started)
        totals.append(time.perf_counter() - started)
    return statistics.median(totals[5:]), statistics.median(waits[5:])


def runner_on_dataloader_row(data: Any, repeats: int) -> Row:
    """The Runner and a hand-written loop over the same 40 batches of the image-folder
    DataLoader (its workers kept between repeats), interleaved."""
    loader = FirstBatches(data.train, 40)
    hand_written("cnn", loader)  # warm-up: workers, allocator
    with tempfile.TemporaryDirectory() as tmp:
        runs = {
            "hand": lambda r: hand_written("cnn", loader),
            "runner": lambda r: with_runner("cnn", loader, Path(tmp) / f"r{r}")[0],
        }
        times = interleaved(runs, repeats)
    label = "cnn: Runner vs hand-written loop, same image_folder DataLoader"
    return loop_row(label, times["hand"], times["runner"])


if __name__ == "__main__":
    for row in image_folder_rows(quick=True):
        print(" | ".join(row.values()))
