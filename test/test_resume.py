"""Resume that changes the run: training longer rebuilds the schedule; another optimizer or
dataset is refused (no trace left) unless allowed; a full disk is one line."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from helpers import tiny_overrides
from src.reporting.logger import read_metrics
from src.training.checkpoint import load_checkpoint
from src.training.resume import ResumeMismatch, plan_resume

PEAK_LR = 0.01  # optimizer.lr of adamw.yaml: the one-cycle peak


@pytest.fixture
def run_copy(finished_run: Path, tmp_path: Path) -> Path:
    """A private copy of the shared 3-epoch run (30 steps, one-cycle schedule), to resume."""
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    return run_dir


def everything(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): (
            hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else ""
        )
        for p in sorted(folder.rglob("*"))
    }


def train_lrs(run_dir: Path) -> dict[int, float]:
    rows = read_metrics(run_dir / "metrics.csv")
    return {int(r["step"]): float(r["lr"]) for r in rows if r["split"] == "train"}


def test_resuming_with_more_epochs_trains_on_under_a_rebuilt_schedule(
    cli, data_root: Path, run_copy: Path
) -> None:
    args = tiny_overrides(data_root, run_copy)[:-1]
    ended = train_lrs(run_copy)[30]  # the one-cycle schedule has annealed to ~0
    longer = cli(*args, f"resume={run_copy}", "runner.max_epochs=4")
    assert longer.returncode == 0, longer.stderr[-3000:]
    assert "a new schedule over steps 30-40" in longer.stdout + longer.stderr
    state = load_checkpoint(run_copy / "checkpoints" / "last.pt")["state"]
    assert state["step"] == 40 and state["epoch"] == 4 and state["finished"]
    lrs = [lr for step, lr in train_lrs(run_copy).items() if step > 30]
    assert len(lrs) == 5 and lrs[0] > 100 * ended  # a new warm-up and decay over steps 31-40
    assert max(lrs) <= PEAK_LR and lrs == sorted(lrs, reverse=True) and lrs[-1] < lrs[0] / 10
    # Another optimizer (refused without it, see below) goes on under allow_resume_changes.
    sgd = ["optimizer=sgd", "runner.max_epochs=5", f"resume={run_copy}"]
    allowed = cli(*args, *sgd, "allow_resume_changes=true")
    assert allowed.returncode == 0, allowed.stderr[-3000:]  # once a KeyError: 'momentum'
    assert load_checkpoint(run_copy / "checkpoints" / "last.pt")["state"]["step"] == 50


def test_resuming_with_another_optimizer_or_dataset_is_refused_and_leaves_no_trace(
    cli, data_root: Path, run_copy: Path
) -> None:
    before = everything(run_copy)
    args = [*tiny_overrides(data_root, run_copy)[:-1], f"resume={run_copy}"]
    result = cli(*args, "optimizer=sgd")
    assert result.returncode == 2, result.stdout + result.stderr
    line = result.stderr.strip()
    assert "\n" not in line and "the config differs from the checkpoint's in" in line
    assert "optimizer._target_ ('torch.optim.AdamW' -> 'torch.optim.SGD')" in line
    assert "optimizer.momentum" in line and "allow_resume_changes=true" in line
    assert everything(run_copy) == before  # no .hydra/resume-*, no log lines, no records
    # Another dataset (or task, or model) is refused the same way, before any data is read.
    saved = load_checkpoint(run_copy / "checkpoints" / "last.pt")
    fashion = {**saved["config"], "data": {**saved["config"]["data"], "_target_": "x.fashion"}}
    with pytest.raises(ResumeMismatch, match=r"data\._target_ \('src\.data\.mnist"):
        plan_resume(run_copy, saved, fashion, allow_changes=False)
    assert plan_resume(run_copy, saved, fashion, allow_changes=True).keeps_moments


def test_a_full_disk_during_a_checkpoint_is_one_line_and_keeps_the_previous_one(
    cli, data_root: Path, run_copy: Path
) -> None:
    last = run_copy / "checkpoints" / "last.pt"
    before = last.read_bytes()

    args = [*tiny_overrides(data_root, run_copy)[:-1], f"resume={run_copy}"]
    # files may not grow past 1 MB: a checkpoint is 2.5 MB
    result = cli(*args, "runner.max_epochs=4", max_file_size=1 << 20)
    assert result.returncode == 2, result.stdout + result.stderr[-3000:]
    line = result.stderr.strip()
    assert "\n" not in line and "Traceback" not in line, line
    assert f"could not write {last}" in line and "free there" in line
    assert "the previous last.pt is intact" in line
    assert last.read_bytes() == before
    assert not [p.name for p in last.parent.iterdir() if p.name.startswith(".")]
