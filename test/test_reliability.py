"""Nothing lost: exact resume after SIGTERM, kill -9 safety, bad input, eval from a checkpoint."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import forkserver
import pytest
import torch

from helpers import tiny_overrides
from src.training.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
STEPS = 150  # 500 training samples / batch 5 = 100 steps per epoch: resume lands mid-epoch


def exact_overrides(data_root: Path, run_dir: Path) -> list[str]:
    """The default CNN, optimizer and schedule; small batches so there are many steps."""
    return [
        *tiny_overrides(data_root, run_dir),
        "data.batch_size=5",
        "runner.log_every_n_steps=1",
        f"runner.max_steps={STEPS}",
    ]


def spawn(*args: str) -> forkserver.Started:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return forkserver.start("src.main", list(args), REPO, env, capture="merged")


def logged_steps(run_dir: Path) -> int:
    path = run_dir / "metrics.csv"
    if not path.exists():
        return 0
    lines = path.read_text().splitlines()
    return int(lines[-1].split(",")[0]) if len(lines) > 1 else 0


def wait_for(predicate, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.002)


def train_rows(run_dir: Path) -> list[tuple[str, ...]]:
    """Every training row as logged, but the throughput (a wall-clock measure)."""
    with open(run_dir / "metrics.csv") as handle:
        rows = [r for r in csv.DictReader(handle) if r["split"] == "train"]
    return [tuple(v for k, v in r.items() if k != "samples_per_s") for r in rows]


TASKS = {  # every shipped task, with a model small enough for a few seconds of training
    "classification": [],
    "reconstruction": [  # with an average of the weights (EMA) kept, and saved, too
        "task=reconstruction",
        "model.channels=[4,8]",
        "model.code_size=8",
        "runner.ema.decay=0.9",
    ],
    "language_model": ["task=language_model", "data.block_size=16", "model.n_layer=1"],
}
MNIST_ONLY = ("data.root", "data.download", "data.verify_md5", "data.val_size")


def task_overrides(task: str, data_root: Path, run_dir: Path) -> list[str]:
    """`exact_overrides` for the task; the language model reads a text of 8,920 characters:
    500 training windows of 16, so 100 batches of 5 an epoch as for the images."""
    args = [*exact_overrides(data_root, run_dir), *TASKS[task]]
    if task != "language_model":
        return args
    corpus = run_dir.parent / "corpus.txt"
    lines = (f"def f{i}(x):\n    return x * {i % 7} + {i % 3}\n" for i in range(400))
    corpus.write_text("".join(lines)[:8920])
    return [*(a for a in args if not a.startswith(MNIST_ONLY)), f"data.path={corpus}"]


@pytest.mark.parametrize("task", TASKS)
def test_sigterm_mid_epoch_then_resume_is_bitwise_identical(
    cli, data_root: Path, tmp_path: Path, task: str
) -> None:
    full_dir, cut_dir = tmp_path / "full", tmp_path / "cut"
    full = cli(*task_overrides(task, data_root, full_dir))
    assert full.returncode == 0, full.stderr

    proc = spawn(*task_overrides(task, data_root, cut_dir))
    wait_for(lambda: logged_steps(cut_dir) >= 20)
    proc.send_signal(signal.SIGSTOP)  # freeze it mid-epoch, then ask it to stop
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGCONT)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 143, output
    assert "stopped by signal 15" in output and "last.pt" in output
    stopped = load_checkpoint(cut_dir / "checkpoints" / "last.pt")["state"]
    assert 20 <= stopped["step"] < STEPS and stopped["batch_in_epoch"] not in (0, 100)

    resumed = cli(*task_overrides(task, data_root, cut_dir), "resume=auto")
    assert resumed.returncode == 0, resumed.stderr
    assert f"Resumed from {cut_dir / 'checkpoints' / 'last.pt'}" in resumed.stdout + resumed.stderr
    a = load_checkpoint(full_dir / "checkpoints" / "last.pt")
    b = load_checkpoint(cut_dir / "checkpoints" / "last.pt")
    assert a["state"]["step"] == b["state"]["step"] == STEPS
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    for name, tensor in a["callbacks"].get("ema", {}).get("weights", {}).items():
        assert torch.equal(tensor, b["callbacks"]["ema"]["weights"][name]), name
    assert (task == "reconstruction") == ("ema" in a["callbacks"])
    assert train_rows(full_dir) == train_rows(cut_dir)  # same steps, same losses, no duplicates
    full_results = json.loads((full_dir / "results.json").read_text())
    cut_results = json.loads((cut_dir / "results.json").read_text())
    tests = [k for k in full_results if k.startswith(("test/", "best/"))]
    assert len(tests) >= 3 and all(full_results[k] == cut_results[k] for k in tests), tests
    assert cut_results["wall_time_s"] >= cut_results["train_time_s"]  # over both segments


def test_kill_9_while_checkpointing_always_leaves_a_loadable_last_pt(
    cli, data_root: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    args = [*exact_overrides(data_root, run_dir), "runner.checkpoint_every_n_steps=1"]
    rng = random.Random(0)
    for attempt in range(3):
        resume = ["resume=auto"] if attempt else []
        proc = spawn(*args, *resume)
        wait_for(lambda: (run_dir / "checkpoints" / "last.pt").exists())
        time.sleep(rng.uniform(0.05, 0.6))
        proc.kill()
        proc.wait()
        state = load_checkpoint(run_dir / "checkpoints" / "last.pt")["state"]
        assert 0 < state["step"] <= STEPS
    final = cli(*args, "resume=auto")
    assert final.returncode == 0, final.stderr
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["state"]["step"] == STEPS
    steps = [int(row[0]) for row in train_rows(run_dir)]
    assert steps == list(range(1, STEPS + 1))  # appended with no duplicated or missing steps


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_eval_from_a_checkpoint_reproduces_the_test_accuracy(
    cli, finished_run: Path, tmp_path: Path
) -> None:
    result = cli(f"ckpt={finished_run / 'checkpoints' / 'best.pt'}", module="src.eval", cwd="/")
    assert result.returncode == 0, result.stderr
    expected = json.loads((finished_run / "results.json").read_text())
    got = json.loads((finished_run / "eval" / "best" / "results.json").read_text())
    assert got["test/acc"] == expected["test/acc"] and got["test/loss"] == expected["test/loss"]
    # One file per checkpoint: a loose one gets its results beside it, never in ../../eval.
    loose = tmp_path / "loose" / "last.pt"
    loose.parent.mkdir()
    loose.write_bytes((finished_run / "checkpoints" / "last.pt").read_bytes())
    assert cli(f"ckpt={loose}", module="src.eval").returncode == 0
    assert json.loads((tmp_path / "loose" / "last.eval.json").read_text())["step"] > 0
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["last.eval.json", "last.pt", "loose"]
    assert (finished_run / "eval" / "best" / "results.json").is_file()


def one_error_line(result: subprocess.CompletedProcess, code: int = 2) -> str:
    assert result.returncode == code, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_truncated_checkpoint_is_refused_and_left_alone(
    cli, finished_run: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.pt"
    broken.write_bytes((finished_run / "checkpoints" / "last.pt").read_bytes()[:5000])
    before = digest(broken)
    line = one_error_line(cli(f"ckpt={broken}", module="src.eval"))
    assert "not a readable checkpoint" in line
    line = one_error_line(cli(f"resume={broken}", f"hydra.run.dir={tmp_path / 'x'}"))
    assert "not a readable checkpoint" in line and digest(broken) == before


def test_checkpoint_of_another_model_shape_is_refused(
    cli, data_root: Path, finished_run: Path
) -> None:
    before = {p: digest(p) for p in finished_run.rglob("*") if p.is_file()}
    shape = ["model.hidden=64", "allow_resume_changes=true"]  # past the config check
    result = cli(*tiny_overrides(data_root, finished_run), *shape, f"resume={finished_run}")
    assert "does not fit this model" in one_error_line(result)
    assert {p: digest(p) for p in finished_run.rglob("*") if p.is_file()} == before


def test_missing_resume_path(cli, tmp_path: Path) -> None:
    line = one_error_line(cli(f"resume={tmp_path / 'nowhere'}"))
    assert "no such checkpoint file or run directory" in line


def test_missing_and_corrupt_data_files(cli, data_root: Path, tmp_path: Path) -> None:
    args = [f"hydra.run.dir={tmp_path / 'run'}", "runner.max_steps=1"]
    line = one_error_line(cli(*args, f"data.root={tmp_path / 'empty'}", "data.download=false"))
    assert "data files missing in" in line and str(tmp_path / "empty") in line
    line = one_error_line(cli(*args, f"data.root={data_root}", "data.download=false"))
    assert "fails its md5 check" in line  # synthetic bytes are not the official files


def test_unwritable_output_folder(cli, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    line = one_error_line(cli(f"hydra.run.dir={blocker / 'run'}", "runner.max_steps=1"))
    assert "Not a directory" in line
