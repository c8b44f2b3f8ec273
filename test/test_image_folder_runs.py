"""`data=image_folder` end to end: exact resume with augmentation and DataLoader workers, and
DDP with gloo (batched augmentation, and per-sample torchvision transforms) against one process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import forkserver
import pytest
import torch

from helpers import REPO, run_cli, write_image_folder
from src.reporting.logger import read_metrics
from src.training.checkpoint import load_checkpoint

TORCHRUN = str(Path(sys.executable).with_name("torchrun"))
STEPS = 36  # 96 training images / batch 4 = 24 steps an epoch: the signal lands mid-epoch
ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # the same in every run (bitwise equality needs it)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_image_folder(
        tmp_path_factory.mktemp("images") / "digits", per_class=40, size=(28, 28)
    )


@pytest.fixture(scope="module")
def small_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("small") / "bands", per_class=40)


def overrides(root: Path, run_dir: Path, *extra: str) -> list[str]:
    return [
        "data=image_folder",
        f"data.root={root}",
        f"data.cache_dir={root.parent / 'cache'}",
        "device=cpu",
        "runner.progress=log",
        f"hydra.run.dir={run_dir}",
        *extra,
    ]


def spawn(*args: str) -> forkserver.Started:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO), **ONE_THREAD}
    return forkserver.start("src.main", list(args), REPO, env, capture="merged")


def wait_for_step(run_dir: Path, step: int, timeout: float = 120.0) -> None:
    """Until metrics.csv has a row of `step` or later (it is written as the run goes)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        path = run_dir / "metrics.csv"
        last = path.read_text().splitlines()[-1] if path.exists() else ""
        if last.split(",")[0].isdigit() and int(last.split(",")[0]) >= step:
            return
        time.sleep(0.002)
    raise TimeoutError(f"{run_dir} never logged step {step}")


def rows(run_dir: Path) -> list[dict[str, str]]:
    return [
        {k: v for k, v in row.items() if k != "samples_per_s"}
        for row in read_metrics(run_dir / "metrics.csv")
    ]


def test_sigterm_mid_epoch_then_resume_sees_the_same_augmented_pixels(
    folder: Path, tmp_path: Path
) -> None:
    extra = [
        "data.batch_size=4",
        "data.loader.num_workers=2",
        "data.augment.hflip=0.5",
        "data.augment.brightness=0.3",
        "runner.log_every_n_steps=1",
        f"runner.max_steps={STEPS}",
    ]
    full_dir, cut_dir = tmp_path / "full", tmp_path / "cut"
    full = run_cli(*overrides(folder, full_dir, *extra), env=ONE_THREAD)
    assert full.returncode == 0, full.stderr[-3000:]

    proc = spawn(*overrides(folder, cut_dir, *extra))
    wait_for_step(cut_dir, 6)
    proc.send_signal(signal.SIGSTOP)  # freeze it mid-epoch, then ask it to stop
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGCONT)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 143, output
    stopped = load_checkpoint(cut_dir / "checkpoints" / "last.pt")["state"]
    assert 6 <= stopped["step"] < STEPS and stopped["batch_in_epoch"] not in (0, 24)

    resumed = run_cli(*overrides(folder, cut_dir, *extra), "resume=auto", env=ONE_THREAD)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = load_checkpoint(full_dir / "checkpoints" / "last.pt")
    b = load_checkpoint(cut_dir / "checkpoints" / "last.pt")
    assert a["state"]["step"] == b["state"]["step"] == STEPS
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    assert rows(full_dir) == rows(cut_dir)  # every train and val row, bit for bit
    results = [json.loads((d / "results.json").read_text()) for d in (full_dir, cut_dir)]
    assert results[0]["test/acc"] == results[1]["test/acc"]


def launch(command: list[str]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = str(REPO)
    env.pop("HYDRA_FULL_ERROR", None)
    env.pop("RUN_STAMP", None)
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.mark.parametrize("mode", ["batched", "per_sample"])
def test_two_ranks_match_one_process_and_count_each_sample_once(
    small_folder: Path, tmp_path: Path, mode: str
) -> None:
    folder = small_folder  # 12x12 grey, 120 images: 96 train, 12 val, 12 test
    extra = [
        f"data.augment.mode={mode}",
        "data.augment.hflip=0.5",
        "data.batch_size=16",
        "data.eval_batch_size=5",
        "data.loader.num_workers=0",
        "model.kernel_sizes=[3,3]",
        "optimizer=sgd",
        "scheduler=none",
        "runner.max_steps=8",  # 6 steps an epoch: across an epoch end
    ]
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    launch([sys.executable, "-m", "src.main", *overrides(folder, single, *extra)])
    torchrun = [TORCHRUN, "--standalone", "--nproc_per_node", "2", "-m", "src.main"]
    launch([*torchrun, *overrides(folder, ddp, *extra)])
    models = [
        torch.load(d / "checkpoints" / "last.pt", weights_only=True)["model"] for d in (single, ddp)
    ]
    for key in models[0]:
        torch.testing.assert_close(models[0][key], models[1][key], rtol=1e-4, atol=1e-5)
    val = [
        [r for r in read_metrics(d / "metrics.csv") if r["split"] == "val"] for d in (single, ddp)
    ]
    assert [r["step"] for r in val[0]] == [r["step"] for r in val[1]] == ["6", "8"]
    for a, b in zip(*val):
        assert a["acc"] == b["acc"] and float(a["loss"]) == pytest.approx(
            float(b["loss"]), rel=1e-4
        )
    results = [json.loads((d / "results.json").read_text()) for d in (single, ddp)]
    assert results[0]["test/samples"] == results[1]["test/samples"] == 12  # 10 % of 120, once
    assert results[0]["test/acc"] == results[1]["test/acc"] and results[1]["world_size"] == 2
