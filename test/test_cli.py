"""The real command line, end to end, on synthetic IDX files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from helpers import REPO, tiny_overrides

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


def test_a_bug_inside_a_model_keeps_its_traceback_a_user_mistake_is_one_line(
    cli, data_root: Path, tmp_path: Path
) -> None:
    args = tiny_overrides(data_root, tmp_path / "run")
    test_code = {"PYTHONPATH": f"{REPO}:{REPO / 'test'}"}
    bug = cli(*args, "model._target_=helpers.BrokenModel", env=test_code)
    assert bug.returncode == 1 and "Traceback" in bug.stderr
    assert "ZeroDivisionError" in bug.stderr and "helpers.py" in bug.stderr
    assert "Error in call to target" not in bug.stderr  # not wrapped into a one-liner
    typo = cli(*args, "model._target_=src.model.cnn.CNNN")
    assert typo.returncode == 2 and "Traceback" not in typo.stderr
    assert typo.stderr.startswith("error: ") and "src.model.cnn.CNNN" in typo.stderr


def test_compile_without_a_working_compiler_is_one_line_before_any_work(
    cli, tmp_path: Path
) -> None:
    result = cli(
        "runner.compile=true",
        f"hydra.run.dir={tmp_path / 'run'}",
        f"data.root={tmp_path / 'no-data'}",  # it stops before looking for data
        env={"CXX": str(tmp_path / "no-such-compiler")},
        fresh=True,  # torch reads CXX when it is imported
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "runner.compile=true needs a working C++ compiler" in lines[0]
    assert not (tmp_path / "run").exists() and not (tmp_path / "no-data").exists()
