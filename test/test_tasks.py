"""Tasks through the real command line: one's own task (defined in this file only), the
reconstruction task, and the monitor check against a task's metric names."""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from helpers import REPO, run_cli, sweep_overrides, tiny_overrides
from src.task.base import Task, inputs_and_targets
from src.training.checkpoint import load_checkpoint

OWN_TASK_ENV = {"PYTHONPATH": f"{REPO}:{REPO / 'test'}"}  # so the CLI can import this file


class TopTwo(Task):
    """A task of one's own: cross-entropy, and whether the label is among the two best guesses."""

    metric_names = ("loss", "top2")

    def loss(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, targets = inputs_and_targets(batch)
        logits = model(inputs)
        return nn.functional.cross_entropy(logits, targets), logits

    def batch_values(self, logits: torch.Tensor, batch: Any) -> dict[str, torch.Tensor]:
        _, targets = inputs_and_targets(batch)
        return {"top2": (logits.topk(2, dim=1).indices == targets[:, None]).any(1).sum()}

    def summarize(self, totals: Mapping[str, Any], samples: int) -> dict[str, float]:
        return {"top2": totals["top2"] / max(samples, 1)}


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_a_task_of_ones_own_trains_and_its_metric_reaches_every_record(
    data_root: Path, tmp_path: Path
) -> None:
    sweep_dir = tmp_path / "sweep"
    own = ["~task", "+task._target_=test_tasks.TopTwo", "runner.monitor=val/top2"]
    own.append("runner.monitor_mode=max")
    swept = sweep_overrides(data_root, sweep_dir, "optimizer.lr=0.003,0.01")
    result = run_cli("--multirun", *own, *swept, env=OWN_TASK_ENV)
    assert result.returncode == 0, result.stderr
    for trial in ("0", "1"):
        rows = read_rows(sweep_dir / trial / "metrics.csv")
        assert list(rows[0]) == ["step", "epoch", "split", "loss", "top2", "lr", "samples_per_s"]
        assert all(0.0 <= float(r["top2"]) <= 1.0 for r in rows)
        results = json.loads((sweep_dir / trial / "results.json").read_text())
        assert {"test/top2", "best/val/top2", "test/loss"} <= set(results)
        assert "acc" not in json.dumps(results)
    summary = read_rows(sweep_dir / "summary.csv")
    assert {"best/val/top2", "final/val/top2", "test/top2"} <= set(summary[0])
    assert "test/top2" in (sweep_dir / "summary.md").read_text()


def test_a_monitor_that_names_no_metric_is_refused_before_any_work(
    data_root: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    result = run_cli(*tiny_overrides(data_root, run_dir), "runner.monitor=val/foo")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: runner.monitor=val/foo")
    assert "val/loss, val/acc" in lines[0]
    assert not (run_dir / "metrics.csv").exists() and not (run_dir / "checkpoints").exists()


def test_reconstruction_keeps_the_weights_of_the_lowest_validation_loss(
    data_root: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    args = [*tiny_overrides(data_root, run_dir), "task=reconstruction", "runner.max_epochs=4"]
    result = run_cli(*args, "model.channels=[4,8]", "model.code_size=8")
    assert result.returncode == 0, result.stderr
    val = [r for r in read_rows(run_dir / "metrics.csv") if r["split"] == "val"]
    assert {"loss", "mse", "psnr"} <= set(val[0]) and "acc" not in val[0]
    losses = [float(r["loss"]) for r in val]
    lowest = min(range(len(val)), key=losses.__getitem__)
    assert lowest > 0  # it improved after the first epoch: "max" would have kept epoch 1
    results = json.loads((run_dir / "results.json").read_text())
    assert results["best/val/loss"] == pytest.approx(losses[lowest], rel=1e-7)
    best = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    assert best["state"]["step"] == int(val[lowest]["step"]) == results["best/step"]
    assert results["test/psnr"] > 10 and results["test/mse"] < 0.1
