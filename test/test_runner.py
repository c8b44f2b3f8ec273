"""The Runner on hand-built objects: no Hydra, no files unless asked."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from src.data.in_memory import InMemoryLoader
from src.launch.signals import StopTraining
from src.model.cnn import CNN
from src.runner import Runner
from src.task.classification import Classification
from src.training.checkpoint import Checkpointer
from src.training.options import RunnerOptions


def _pair(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return a, b


def make_runner(model: nn.Module, lr: float = 1e-2, sgd: bool = False, **options) -> Runner:
    optimizer = torch.optim.SGD if sgd else torch.optim.Adam
    return Runner(
        model,
        optimizer(model.parameters(), lr=lr),
        Classification(),
        torch.device("cpu"),
        options=RunnerOptions(**options),
    )


def test_overfitting_one_batch_drives_the_loss_near_zero() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,))
    loader = InMemoryLoader(x, y, 32, _pair, shuffle=True)
    runner = make_runner(CNN(), lr=3e-3, max_epochs=50, log_every_n_steps=20)
    before = runner.evaluate(loader, "train")["train/loss"]
    runner.fit(loader, InMemoryLoader(x, y, 32, _pair))
    after = runner.evaluate(loader, "train")
    assert before > 2.0
    assert after["train/loss"] < 0.01 and after["train/acc"] == 1.0
    assert runner.state.step == 50 and runner.state.epoch == 50


def test_max_steps_stops_mid_epoch_and_validation_still_runs() -> None:
    x, y = torch.randn(40, 1, 28, 28), torch.randint(0, 10, (40,))
    runner = make_runner(CNN(), max_epochs=5, max_steps=3)
    runner.fit(InMemoryLoader(x, y, 10, _pair, shuffle=True), InMemoryLoader(x, y, 10, _pair))
    assert runner.state.step == 3 and runner.state.epoch == 0 and runner.state.batch_in_epoch == 3
    assert runner.state.best_metric is not None and runner.state.finished


def test_gradient_accumulation_matches_one_large_batch() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))
    big, small = CNN(), CNN()
    small.load_state_dict(big.state_dict())
    opts = {"max_epochs": 1, "max_steps": 1, "sgd": True, "lr": 0.1}  # update proportional to grad
    make_runner(big, **opts).fit(InMemoryLoader(x, y, 16, _pair, shuffle=True, seed=1), [])
    acc = make_runner(small, accumulate_grad_batches=2, **opts)
    acc.fit(InMemoryLoader(x, y, 8, _pair, shuffle=True, seed=1), [])
    # same 16 samples: the seeded permutation is identical, split into two halves
    for a, b in zip(big.parameters(), small.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


class NaNAfter(nn.Module):
    """Finite outputs for `good` calls, then NaN: a stand-in for a diverging model."""

    def __init__(self, good: int) -> None:
        super().__init__()
        self.linear, self.calls, self.good = nn.Linear(4, 3), 0, good

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        out = self.linear(x)
        return out * float("nan") if self.calls > self.good else out


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    x, y = torch.randn(40, 4), torch.randint(0, 3, (40,))
    model = NaNAfter(good=5)
    runner = make_runner(model, max_epochs=3, log_every_n_steps=2, checkpoint_every_n_steps=2)
    runner.checkpointer = Checkpointer(tmp_path, keep_last_k=0)
    with pytest.raises(
        StopTraining, match=r"non-finite loss at step 6 \(epoch 0, batch 5\)"
    ) as err:
        runner.fit(InMemoryLoader(x, y, 4, _pair, shuffle=True), InMemoryLoader(x, y, 4, _pair))
    assert err.value.exit_code == 3
    saved = torch.load(tmp_path / "last.pt", weights_only=True)
    assert saved["state"]["step"] == 4  # written at step 4, never overwritten after the NaN
    assert all(torch.isfinite(t).all() for t in saved["model"].values())


def test_skip_mode_drops_non_finite_batches_and_carries_on() -> None:
    x, y = torch.randn(40, 4), torch.randint(0, 3, (40,))
    model = NaNAfter(good=3)
    runner = make_runner(model, max_epochs=1, on_nonfinite="skip")
    runner.fit(InMemoryLoader(x, y, 4, _pair, shuffle=True), [])
    assert runner.state.step == 3  # 10 batches, 7 of them skipped
    assert all(torch.isfinite(p).all() for p in model.parameters())
