"""Sweeps through the real command line on synthetic data: grid, failures, resuming, the summary
they write, and the TensorBoard files of each trial (Optuna: test_optuna.py)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from helpers import run_cli, sweep_overrides

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
GRID = ("optimizer.lr=0.003,0.01", "data.batch_size=50,100")


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def grid_sweep(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 2x2 grid sweep (`make sweep` with its default, sweep=grid)."""
    sweep_dir = tmp_path_factory.mktemp("grid") / "sweep"
    result = run_cli("--multirun", "sweep=grid", *sweep_overrides(data_root, sweep_dir, *GRID))
    assert result.returncode == 0, result.stderr
    assert "Best trial:" in result.stdout
    return sweep_dir


def test_grid_sweep_summary_has_one_row_per_trial_read_back_from_its_run(grid_sweep: Path) -> None:
    rows = read_csv(grid_sweep / "summary.csv")
    assert len(rows) == 4
    settings = {(r["optimizer.lr"], r["data.batch_size"]) for r in rows}
    assert settings == {("0.003", "50"), ("0.003", "100"), ("0.01", "50"), ("0.01", "100")}
    for row in rows:
        run = grid_sweep / row["trial"]
        results = json.loads((run / "results.json").read_text())
        assert row["status"] == results["status"] == "completed"
        for key in ("best/val/acc", "test/acc", "test/loss", "wall_time_s"):
            assert float(row[key]) == pytest.approx(results[key]), key
        assert float(row["epochs"]) == results["epochs"]
        overrides = yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text())
        assert f"optimizer.lr={row['optimizer.lr']}" in overrides
    scores = [float(r["best/val/acc"]) for r in rows]
    assert scores == sorted(scores, reverse=True)  # best first
    assert (grid_sweep / "summary.png").read_bytes()[:8] == PNG_MAGIC
    text = (grid_sweep / "summary.md").read_text()
    assert f"**Best trial: {rows[0]['trial']}**" in text
    assert text.count("| completed |") == 4


def test_rerunning_a_finished_sweep_into_its_folder_trains_nothing(
    grid_sweep: Path, data_root: Path
) -> None:
    def fingerprints() -> dict[str, tuple[int, str]]:
        return {
            run.name: ((run / "results.json").stat().st_mtime_ns, (run / "metrics.csv").read_text())
            for run in grid_sweep.iterdir()
            if (run / "results.json").is_file()
        }

    before = fingerprints()
    result = run_cli("--multirun", "sweep=grid", *sweep_overrides(data_root, grid_sweep, *GRID))
    assert result.returncode == 0, result.stderr
    assert fingerprints() == before and len(before) == 4
    log = result.stdout + result.stderr
    assert log.count("not run again") == 4
    assert "test accuracy" not in log  # no trial trained or tested
    assert len(read_csv(grid_sweep / "summary.csv")) == 4


def test_each_trial_logs_scalars_and_hyperparameters_to_tensorboard(grid_sweep: Path) -> None:
    run = grid_sweep / "0"
    assert list(run.glob("events.out.tfevents.*"))
    events = EventAccumulator(str(run))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    expected = {"train/loss", "train/acc", "train/lr", "train/samples_per_s", "val/loss", "val/acc"}
    assert expected | {"test/acc", "best/val/acc"} <= tags
    with open(run / "metrics.csv") as handle:
        csv_steps = [int(r["step"]) for r in csv.DictReader(handle) if r["split"] == "train"]
    assert [e.step for e in events.Scalars("train/loss")] == csv_steps
    results = json.loads((run / "results.json").read_text())
    assert events.Scalars("test/acc")[-1].value == pytest.approx(results["test/acc"])
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["optimizer.lr"].number_value == pytest.approx(0.003)
    assert hparams["model._target_"].string_value == "src.model.cnn.CNN"


def test_a_failing_trial_is_recorded_and_the_sweep_carries_on(
    cli, data_root: Path, tmp_path: Path
) -> None:
    sweep_dir = tmp_path / "sweep"
    # image_size=20 builds a head for 20x20 inputs: the first 28x28 batch raises a RuntimeError
    result = cli("--multirun", *sweep_overrides(data_root, sweep_dir, "model.image_size=20,28"))
    assert result.returncode == 4, result.stderr  # the exit says that a trial failed
    assert "1 of 2 trials did not complete: 0 (failed)" in result.stderr
    failed = json.loads((sweep_dir / "0" / "results.json").read_text())
    assert failed["status"] == "failed"
    assert failed["error"].startswith("RuntimeError: ") and "\n" not in failed["error"]
    assert "Traceback" in (sweep_dir / "0" / "main.log").read_text()
    assert json.loads((sweep_dir / "1" / "results.json").read_text())["status"] == "completed"
    rows = read_csv(sweep_dir / "summary.csv")
    assert [(r["model.image_size"], r["status"]) for r in rows] == [
        ("28", "completed"),
        ("20", "failed"),
    ]
    assert rows[1]["error"] == failed["error"] and rows[1]["best/val/acc"] == ""
    assert math.isfinite(float(rows[0]["best/val/acc"]))
    text = (sweep_dir / "summary.md").read_text()
    assert "- trial 0 (failed): RuntimeError: " in text


def test_a_failed_trial_runs_again_from_a_clean_folder_when_the_sweep_is_rerun(
    cli, data_root: Path, tmp_path: Path
) -> None:
    trial = tmp_path / "sweep" / "0"
    (trial / "checkpoints").mkdir(parents=True)
    (trial / "results.json").write_text('{"status": "failed", "error": "x"}')
    (trial / "metrics.csv").write_text("step,epoch,split,loss,acc\n999,9,train,9.0,0.0\n")
    (trial / "checkpoints" / "step-0000999.pt").write_bytes(b"an earlier attempt's")
    (trial / "main.log").write_text("an earlier attempt's log\n")
    result = cli("--multirun", *sweep_overrides(data_root, trial.parent, "seed=3"))
    assert result.returncode == 0, result.stderr
    results = json.loads((trial / "results.json").read_text())
    assert results["status"] == "completed" and "seed=3" in results["overrides"]
    steps = [int(r["step"]) for r in read_csv(trial / "metrics.csv")]
    assert steps and max(steps) == 6  # nothing of the earlier attempt mixed in
    assert not (trial / "checkpoints" / "step-0000999.pt").exists()
    assert "earlier attempt" not in (trial / "main.log").read_text()
