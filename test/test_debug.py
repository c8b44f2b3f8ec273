"""Each debug config (`debug=...`) through the real command line, on synthetic IDX files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_config import CONFIG_DIR, compose_with

from helpers import tiny_overrides
from src.config.validate import config_problems
from src.reporting.logger import read_metrics
from src.training.debug import RepeatBatches


def run_debug(cli, data_root: Path, run_dir: Path, mode: str, *extra: str):
    result = cli(*tiny_overrides(data_root, run_dir), f"debug={mode}", *extra)
    assert result.returncode == 0, result.stderr
    return result, json.loads((run_dir / "results.json").read_text())


def test_fast_runs_one_batch_per_split_and_writes_no_checkpoint(
    cli, data_root: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    result, results = run_debug(cli, data_root, run_dir, "fast", "data.eval_batch_size=40")
    assert results["steps"] == 1 and results["epochs"] == 1
    assert results["test/samples"] == 40  # one test batch of 40 out of 200 images
    assert "val/samples 40" in result.stdout + result.stderr  # one val batch out of 100
    rows = read_metrics(run_dir / "metrics.csv")
    assert [(r["split"], r["step"]) for r in rows] == [("train", "1"), ("val", "1")]
    assert not (run_dir / "checkpoints").exists()


def test_overfit_drives_the_loss_on_its_batches_near_zero(
    cli, data_root: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    result, results = run_debug(cli, data_root, run_dir, "overfit", "runner.max_epochs=8")
    assert results["steps"] == 16  # 2 repeated batches x 8 epochs
    assert results["overfit/samples"] == 100 and results["overfit/acc"] == 1.0
    assert results["overfit/loss"] < 0.05
    assert "overfit: loss" in result.stdout + result.stderr


def test_limit_caps_batches_per_epoch(cli, data_root: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    _, results = run_debug(cli, data_root, run_dir, "limit", "runner.limit_train_batches=3")
    assert results["steps"] == 6 and results["epochs"] == 2  # 3 batches x 2 epochs
    assert results["test/samples"] == 200  # the test set is not limited
    assert (run_dir / "checkpoints" / "last.pt").is_file()


def test_profile_writes_a_trace_and_says_how_to_open_it(
    cli, data_root: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    result, _ = run_debug(cli, data_root, run_dir, "profile")
    trace = json.loads((run_dir / "profile" / "trace.json").read_text())
    assert trace["traceEvents"]  # chrome trace format
    assert "ProfilerStep#" in (run_dir / "profile" / "trace.json").read_text()
    assert (run_dir / "profile" / "summary.txt").stat().st_size > 0
    assert "open it in https://ui.perfetto.dev or chrome://tracing" in result.stdout


def test_anomaly_turns_on_anomaly_detection(cli, data_root: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result, results = run_debug(cli, data_root, run_dir, "anomaly", "runner.max_steps=2")
    assert results["steps"] == 2
    assert "autograd anomaly detection on" in result.stdout + result.stderr


def test_anomaly_context_is_scoped_and_catches_nan_in_backward() -> None:
    from src.training.debug import anomaly

    x = torch.tensor([-1.0], requires_grad=True)
    with anomaly(True):
        assert torch.is_anomaly_enabled()
        with pytest.raises(RuntimeError, match="returned nan values"), pytest.warns(UserWarning):
            torch.sqrt(x * 0).sum().backward()  # sqrt'(0) = inf, times 0 -> nan
    assert not torch.is_anomaly_enabled()


def test_repeat_batches_serves_the_same_batches_every_epoch() -> None:
    from src.data.in_memory import InMemoryLoader

    x, y = torch.arange(20).float(), torch.arange(20)
    batches = RepeatBatches(InMemoryLoader(x, y, 4, lambda a, b: b, shuffle=True), 2)
    first = [b.tolist() for b in batches]
    batches.set_epoch(5)
    assert len(batches) == 2 and [b.tolist() for b in batches] == first
    batches.set_epoch(6, start_batch=1)
    assert [b.tolist() for b in batches] == first[1:]


DEBUG_OPTIONS = sorted(p.stem for p in (CONFIG_DIR / "debug").glob("*.yaml"))


@pytest.mark.parametrize("option", DEBUG_OPTIONS)
def test_every_debug_option_composes_and_only_sets_runner_keys(option: str) -> None:
    base, cfg = compose_with(), compose_with(f"debug={option}")
    assert config_problems(cfg) == []
    changed = {k for k in cfg if cfg[k] != base[k]}
    assert changed == {"runner"}, changed


def test_debug_options_are_the_documented_five() -> None:
    assert DEBUG_OPTIONS == ["anomaly", "fast", "limit", "overfit", "profile"]
