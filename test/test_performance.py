"""The hot loop reads nothing back from the device except on logging steps (not a timing test)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from src.data.collate import NormalizeImages
from src.data.in_memory import InMemoryLoader
from src.data.text import TextWindows
from src.launch.allocator import keep_freed_memory
from src.model.autoencoder import ConvAutoencoder
from src.model.char_transformer import CharTransformer
from src.model.cnn import CNN
from src.reporting.progress import Progress
from src.runner import Runner
from src.task.base import Task
from src.task.classification import Classification
from src.task.language_model import LanguageModel
from src.task.reconstruction import Reconstruction
from src.training.options import RunnerOptions
from src.training.schedulers import one_cycle

SRC = str(Path(__file__).resolve().parents[1] / "src")
SYNCING = ["item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__"]


@pytest.fixture
def sync_calls(monkeypatch) -> list[tuple[str, str]]:
    """Record every syncing Tensor method called directly from our own code (src/)."""
    calls: list[tuple[str, str]] = []

    def spy(name: str, original: Callable) -> Callable:
        def wrapper(self, *args, **kwargs):
            caller = sys._getframe(1).f_code.co_filename
            if caller.startswith(SRC):
                calls.append((name, f"{Path(caller).name}:{sys._getframe(1).f_lineno}"))
            return original(self, *args, **kwargs)

        return wrapper

    for name in SYNCING:
        monkeypatch.setattr(torch.Tensor, name, spy(name, getattr(torch.Tensor, name)))
    return calls


def image_batches(mean: float, std: float) -> tuple[InMemoryLoader, InMemoryLoader]:
    """40 training steps of 10 images, and 2 validation batches."""
    images = torch.randint(0, 256, (400, 28, 28), dtype=torch.uint8)
    labels = torch.randint(0, 10, (400,))
    collate = NormalizeImages(mean, std)
    train = InMemoryLoader(images, labels, 10, collate, shuffle=True)
    return train, InMemoryLoader(images[:20], labels[:20], 10, collate)


def text_batches() -> tuple[TextWindows, TextWindows]:
    """40 training steps of 10 windows of 16 characters, and 2 validation batches."""
    text = torch.randint(0, 20, (6500,))
    return TextWindows(text, 16, 10, shuffle=True), TextWindows(text[:321], 16, 10)


def tiny_transformer() -> CharTransformer:
    return CharTransformer(vocab_size=20, block_size=16, n_layer=1, n_head=2, n_embd=16)


TASKS: dict[str, Callable[[], tuple[Task, nn.Module, tuple[Any, Any]]]] = {  # every shipped task
    "classification": lambda: (Classification(), CNN(), image_batches(0.13, 0.31)),
    "reconstruction": lambda: (Reconstruction(), ConvAutoencoder(), image_batches(0.0, 1.0)),
    "language_model": lambda: (LanguageModel(), tiny_transformer(), text_batches()),
}


@pytest.mark.parametrize("name", TASKS)
def test_no_host_sync_on_non_logging_steps(sync_calls: list, name: str) -> None:
    torch.manual_seed(0)
    task, model, (train, val) = TASKS[name]()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    runner = Runner(
        model,
        optimizer,
        task,
        torch.device("cpu"),
        scheduler=one_cycle(optimizer, total_steps=40),
        options=RunnerOptions(max_epochs=1, max_steps=20, log_every_n_steps=5),
        progress=Progress("bar"),
    )
    steps_at_sync: list[int] = []
    original_update = runner.window.update

    def update(*args) -> None:  # mark which step each recorded sync belongs to
        steps_at_sync.extend([runner.state.step] * (len(sync_calls) - len(steps_at_sync)))
        original_update(*args)

    runner.window.update = update  # type: ignore[method-assign]
    runner.fit(train, val)
    steps_at_sync.extend([runner.state.step] * (len(sync_calls) - len(steps_at_sync)))
    assert sync_calls, "the spy saw nothing: instrumentation broken"
    assert set(steps_at_sync) <= {5, 10, 15, 20}, list(zip(steps_at_sync, sync_calls))
    assert 5 in steps_at_sync  # logging steps do read back


def allocator_demo(*args: str) -> float:
    """Page faults per 32 MB tensor allocated and freed, from the module's demo process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    done = subprocess.run(
        [sys.executable, "-m", "src.launch.allocator", *args],
        cwd=Path(SRC).parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return float(done.stdout.split()[0])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="tunes glibc's malloc only")
def test_kept_memory_is_not_faulted_in_again_at_every_step() -> None:
    assert allocator_demo("--default") > 4000  # each 32 MB block is mapped anew (8192 pages)
    assert allocator_demo() == 0


def test_a_users_malloc_variables_win(monkeypatch) -> None:
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    assert keep_freed_memory() is False


def test_malloc_tunables_the_user_set_win(monkeypatch) -> None:
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=131072")
    assert keep_freed_memory() is False
