"""EMA of the weights and early stopping: by hand, in the Runner, and across SIGTERM + resume."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import torch
from test_reliability import logged_steps, spawn, wait_for
from torch import nn

from helpers import tiny_overrides
from src.data.in_memory import InMemoryLoader
from src.runner import Runner
from src.task.classification import Classification
from src.training.callbacks import Callback
from src.training.checkpoint import Checkpointer, load_checkpoint
from src.training.early_stopping import EarlyStopping
from src.training.ema import EMA
from src.training.options import RunnerOptions
from src.training.state import TrainState


def pair(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return a, b


def tiny_runner(model: nn.Module, callbacks: list, **options) -> tuple[Runner, InMemoryLoader]:
    """SGD on a linear model over 3 batches of 8 seeded samples."""
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(24, 4, generator=generator), torch.randint(0, 3, (24,), generator=generator)
    runner = Runner(
        model,
        torch.optim.SGD(model.parameters(), lr=0.5),
        Classification(),
        torch.device("cpu"),
        options=RunnerOptions(**options),
        callbacks=callbacks,
    )
    return runner, InMemoryLoader(x, y, 8, pair, shuffle=True)


class Record(Callback):
    """The live parameters after every optimizer step."""

    def __init__(self, model: nn.Module) -> None:
        self.model, self.seen = model, []

    def on_step_end(self, runner: Runner) -> None:
        self.seen.append([p.detach().clone() for p in self.model.parameters()])


@pytest.mark.parametrize(("warmup", "start"), [(0, 0), (3, 0), (0, 2)])
def test_ema_matches_a_hand_computation_over_three_steps(warmup: int, start: int) -> None:
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    expected = [p.detach().clone() for p in model.parameters()]
    record, ema = Record(model), EMA(model, decay=0.5, warmup_steps=warmup, start_step=start)
    runner, loader = tiny_runner(model, [record, ema], max_epochs=1, max_steps=3)
    runner.fit(loader, [])
    updates = 0
    for step, live in enumerate(record.seen, start=1):
        if step < start:  # before start_step the average copies the weights
            expected = [p.clone() for p in live]
            continue
        decay = 0.5 if warmup == 0 else min(0.5, (1 + updates) / (warmup + updates))
        expected = [decay * e + (1 - decay) * p for e, p in zip(expected, live)]
        updates += 1
    assert len(record.seen) == 3 and ema.updates == updates
    for average, hand in zip(ema.averages, expected):
        torch.testing.assert_close(average, hand, rtol=1e-6, atol=1e-7)


def test_evaluation_uses_the_averaged_weights_and_gives_the_live_ones_back() -> None:
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    ema = EMA(model, decay=0.9)
    runner, loader = tiny_runner(model, [ema])
    runner.fit(loader, [])
    live = {k: v.clone() for k, v in model.state_dict().items()}
    with_average = runner.evaluate(loader, "val")
    assert all(torch.equal(live[k], v) for k, v in model.state_dict().items())
    averaged = nn.Linear(4, 3)
    averaged.load_state_dict(ema.state_dict()["weights"])
    assert tiny_runner(averaged, [])[0].evaluate(loader, "val") == with_average
    assert runner.evaluate(loader, "val", callback_weights=False) != with_average


def test_resuming_with_ema_continues_bit_for_bit(tmp_path: Path) -> None:
    def run(epochs: int, folder: Path, resume: bool = False) -> tuple[nn.Module, EMA]:
        torch.manual_seed(0)
        model = nn.Linear(4, 3)
        ema = EMA(model, decay=0.8, warmup_steps=2)
        runner, loader = tiny_runner(model, [ema], max_epochs=epochs)
        runner.checkpointer = Checkpointer(folder, keep_last_k=0)
        if resume:
            runner.load(load_checkpoint(folder / "last.pt"), "last.pt")
        runner.fit(loader, [])
        return model, ema

    whole, whole_ema = run(4, tmp_path / "whole")
    run(2, tmp_path / "half")
    resumed, resumed_ema = run(4, tmp_path / "half", resume=True)
    assert all(torch.equal(a, b) for a, b in zip(whole.parameters(), resumed.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(whole_ema.averages, resumed_ema.averages))
    assert whole_ema.updates == resumed_ema.updates == 12


def test_early_stopping_counts_validations_without_improvement() -> None:
    runner = type("R", (), {"state": TrainState()})()
    stopper = EarlyStopping("val/loss", "min", patience=2, min_delta=0.01)
    for loss in [1.0, 0.8, 0.795, 0.81]:  # 0.795 is within min_delta: no improvement
        assert not runner.state.stop_reason
        stopper.on_validation_end(runner, {"val/loss": loss})
    assert "did not improve on 0.8" in runner.state.stop_reason
    maximising = EarlyStopping("val/acc", "max", patience=1)
    maximising.on_validation_end(runner, {"val/acc": 0.5})
    maximising.on_validation_end(runner, {"val/acc": 0.6})
    assert maximising.without_improvement == 0 and maximising.best == 0.6


PLATEAU = [  # nothing counts as an improvement: it stops after `patience` validations
    "runner.max_epochs=10",
    "runner.early_stopping.patience=2",
    "runner.early_stopping.min_delta=1e9",
    "runner.log_every_n_steps=1",
]


def test_early_stopping_stops_at_the_same_epoch_across_sigterm_and_resume(
    cli, data_root: Path, tmp_path: Path
) -> None:
    full_dir, cut_dir = tmp_path / "full", tmp_path / "cut"
    full = cli(*tiny_overrides(data_root, full_dir), *PLATEAU)
    assert full.returncode == 0, full.stderr
    results = json.loads((full_dir / "results.json").read_text())
    assert results["epochs"] == 3 and "early stopping: val/acc" in results["stop_reason"]
    assert "early stopping" in full.stdout + full.stderr

    proc = spawn(*tiny_overrides(data_root, cut_dir), *PLATEAU)
    wait_for(lambda: logged_steps(cut_dir) >= 13)  # 10 steps per epoch: inside epoch 1
    proc.send_signal(signal.SIGSTOP)
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGCONT)
    assert proc.wait(timeout=120) == 143
    saved = load_checkpoint(cut_dir / "checkpoints" / "last.pt")
    assert saved["state"]["epoch"] == 1 and saved["callbacks"]["early_stopping"]["best"] is not None
    resumed = cli(*tiny_overrides(data_root, cut_dir), *PLATEAU, "resume=auto")
    assert resumed.returncode == 0, resumed.stderr
    again = json.loads((cut_dir / "results.json").read_text())
    assert again["epochs"] == 3 and again["stop_reason"] == results["stop_reason"]
    assert again["test/acc"] == results["test/acc"]
