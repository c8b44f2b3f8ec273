"""The real command line, end to end, on synthetic IDX files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from helpers import tiny_overrides

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_cli_trains_end_to_end_and_writes_every_artefact(
    cli, data_root: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    result = cli(*tiny_overrides(data_root, run_dir), "runner.max_epochs=2", "runner.max_steps=14")
    assert result.returncode == 0, result.stderr
    assert f"run directory {run_dir}" in result.stdout
    results = json.loads((run_dir / "results.json").read_text())
    for key in ("test/acc", "test/loss", "best/val/acc", "epochs", "steps", "wall_time_s"):
        assert key in results, key
    assert results["steps"] == 14 and results["status"] == "completed"
    assert results["test/acc"] > 0.5  # learnable synthetic digits, 14 steps
    with open(run_dir / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert {"step", "epoch", "split", "loss", "acc", "lr"} <= set(rows[0])
    train_steps = [int(r["step"]) for r in rows if r["split"] == "train"]
    assert train_steps == sorted(set(train_steps)) and train_steps[-1] == 14
    assert [r["epoch"] for r in rows if r["split"] == "val"] == ["0", "1"]
    for name in ("last.pt", "best.pt"):
        assert (run_dir / "checkpoints" / name).stat().st_size > 0
    assert (run_dir / "curves.png").read_bytes()[:8] == PNG_MAGIC
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert (run_dir / "main.log").is_file()
    assert "epoch 0 step 2" in result.stdout + result.stderr  # plain log lines without a tty


def test_cli_model_and_optimizer_swap_from_the_command_line(
    cli, data_root: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    args = tiny_overrides(data_root, run_dir)
    result = cli(*args, "model=mlp", "optimizer=sgd", "scheduler=cosine", "runner.max_steps=4")
    assert result.returncode == 0, result.stderr
    saved = (run_dir / ".hydra" / "config.yaml").read_text()
    assert "src.model.mlp.MLP" in saved and "torch.optim.SGD" in saved
