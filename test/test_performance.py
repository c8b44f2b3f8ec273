"""The hot loop reads nothing back from the device except on logging steps (not a timing test)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from src.data.collate import NormalizeImages
from src.data.in_memory import InMemoryLoader
from src.model.cnn import CNN
from src.reporting.progress import Progress
from src.runner import Runner
from src.task.classification import Classification
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


def test_no_host_sync_on_non_logging_steps(sync_calls: list, tmp_path: Path) -> None:
    torch.manual_seed(0)
    images = torch.randint(0, 256, (400, 28, 28), dtype=torch.uint8)
    labels = torch.randint(0, 10, (400,))
    collate = NormalizeImages(0.13, 0.31)
    train = InMemoryLoader(images, labels, 10, collate, shuffle=True)  # 40 steps per epoch
    model = CNN()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    runner = Runner(
        model,
        optimizer,
        Classification(),
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
    runner.fit(train, InMemoryLoader(images[:20], labels[:20], 10, collate))
    steps_at_sync.extend([runner.state.step] * (len(sync_calls) - len(steps_at_sync)))
    assert sync_calls, "the spy saw nothing: instrumentation broken"
    assert set(steps_at_sync) <= {5, 10, 15, 20}, list(zip(steps_at_sync, sync_calls))
    assert 5 in steps_at_sync  # logging steps do read back
