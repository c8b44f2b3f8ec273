"""Scale-out on CPU: the real CLI under torchrun (gloo), SLURM scripts and requeue, the submitit
launcher, mixed precision and torch.compile.

Three training runs are shared by several tests (module fixture `runs`), all with the same seed,
global batch of 40 (480 training samples: 12 batches an epoch), 15 SGD steps across an epoch end
and a constant learning rate:
  single   one process
  ddp      2 ranks through torchrun (test/ddp_probe.py: every rank dumps its final parameters)
  resumed  2 ranks through `launch.sh --nproc 2`, micro-batches of 20 with accumulate_grad_batches=2
           (so CLI-level accumulation under DDP is covered too; the in-process version is
           test_runner.py::test_gradient_accumulation_matches_one_large_batch), stopped at step 6
           and resumed to step 15
SGD keeps the update proportional to the gradient, so float rounding stays at float tolerance.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import REPO
from helpers import tiny_overrides, with_overrides
from src.launch.cli import quiet_other_ranks
from src.launch.distributed import World
from src.launch.slurm import requeue_if_preempted
from src.reporting.logger import read_metrics

TORCHRUN = str(Path(sys.executable).with_name("torchrun"))
COMMON = [
    "data.val_size=120",
    "data.batch_size=40",
    "optimizer=sgd",
    "scheduler=none",
    "runner.max_epochs=2",
    "runner.max_steps=15",
]
TOL = {"rtol": 1e-4, "atol": 1e-5}


def overrides(data_root: Path, run_dir: Path, *extra: str) -> list[str]:
    """tiny_overrides with `extra` (and COMMON) replacing the values of the same keys."""
    return with_overrides(tiny_overrides(data_root, run_dir), *COMMON, *extra)


def launch(command: list[str], **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **env}
    full_env["PYTHONPATH"] = os.pathsep.join([str(REPO / "test"), str(REPO)])
    full_env.pop("HYDRA_FULL_ERROR", None)
    full_env.pop("RUN_STAMP", None)
    done = subprocess.run(
        command, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def model_of(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], **tol: float) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], **(tol or {"rtol": 0, "atol": 0}), msg=key)


@pytest.fixture(scope="module")
def runs(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ddp")
    dirs = {name: root / name for name in ("single", "ddp", "resumed")}
    launch([sys.executable, "-m", "src.main", *overrides(data_root, dirs["single"])])
    torchrun = [TORCHRUN, "--standalone", "--nproc_per_node", "2"]
    probe = overrides(data_root, dirs["ddp"])
    launch([*torchrun, "-m", "ddp_probe", *probe], PARAMS_DUMP_DIR=str(root / "dump"))
    micro = ["data.batch_size=20", "runner.accumulate_grad_batches=2"]
    first = overrides(data_root, dirs["resumed"], *micro, "runner.max_steps=6")
    done = launch(["./launch.sh", "--nproc", "2", *first], PYTHON=sys.executable)
    assert "+ " + " ".join([TORCHRUN, "--nproc_per_node", "2", "--standalone"]) in done.stdout
    assert _steps(dirs["resumed"]) == 6
    launch([*torchrun, "-m", "src.main", f"resume={dirs['resumed']}", "runner.max_steps=15"])
    return {**dirs, "dump": root / "dump"}


def _steps(run_dir: Path) -> int:
    return int(torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["state"]["step"])


def test_two_ranks_hold_equal_parameters_that_match_one_process(runs: dict[str, Path]) -> None:
    rank0 = torch.load(runs["dump"] / "rank0.pt", weights_only=True)
    rank1 = torch.load(runs["dump"] / "rank1.pt", weights_only=True)
    assert_same(rank0, rank1)  # bit-identical across ranks: DDP averaged the same gradients
    assert_same(rank0, model_of(runs["ddp"]))  # and rank 0 saved exactly what it held
    assert _steps(runs["ddp"]) == _steps(runs["single"]) == 15
    assert_same(model_of(runs["ddp"]), model_of(runs["single"]), **TOL)


def test_two_rank_validation_and_test_metrics_equal_one_process(runs: dict[str, Path]) -> None:
    def val_rows(run_dir: Path) -> list[dict[str, str]]:
        return [r for r in read_metrics(run_dir / "metrics.csv") if r["split"] == "val"]

    single, ddp = val_rows(runs["single"]), val_rows(runs["ddp"])
    assert [(r["step"], r["epoch"]) for r in ddp] == [("12", "0"), ("15", "1")]
    assert [r["step"] for r in single] == [r["step"] for r in ddp]
    for a, b in zip(single, ddp):
        assert float(a["acc"]) == pytest.approx(float(b["acc"]), abs=1e-9)  # 120 samples, once
        assert float(a["loss"]) == pytest.approx(float(b["loss"]), rel=1e-4)
    results = [json.loads((runs[k] / "results.json").read_text()) for k in ("single", "ddp")]
    assert results[0]["test/acc"] == pytest.approx(results[1]["test/acc"], abs=1e-9)
    assert results[0]["test/loss"] == pytest.approx(results[1]["test/loss"], rel=1e-4)
    assert results[1]["world_size"] == 2 and results[0]["world_size"] == 1


def test_reconstruction_on_two_ranks_matches_one_process(data_root: Path, tmp_path: Path) -> None:
    """The DDP equivalence above, for the reconstruction task (an autoencoder, mse and psnr)."""
    dirs = {name: tmp_path / name for name in ("single", "ddp")}
    task = ["task=reconstruction", "runner.max_steps=8", "model.channels=[4,8]"]
    launch([sys.executable, "-m", "src.main", *overrides(data_root, dirs["single"], *task)])
    torchrun = [TORCHRUN, "--standalone", "--nproc_per_node", "2", "-m", "src.main"]
    launch([*torchrun, *overrides(data_root, dirs["ddp"], *task)])
    assert_same(model_of(dirs["ddp"]), model_of(dirs["single"]), **TOL)
    results = [json.loads((dirs[k] / "results.json").read_text()) for k in ("single", "ddp")]
    for key in ("test/loss", "test/mse", "test/psnr", "best/val/loss"):
        assert results[0][key] == pytest.approx(results[1][key], rel=1e-4), key
    assert results[1]["test/samples"] == results[0]["test/samples"]  # each sample counted once


def test_two_rank_run_writes_one_set_of_files(runs: dict[str, Path]) -> None:
    run_dir = runs["ddp"]
    assert sorted(p.name for p in run_dir.parent.iterdir()) == ["ddp", "dump", "resumed", "single"]
    expected = {".hydra", "checkpoints", "curves.png", "main.log", "metrics.csv", "results.json"}
    expected |= {"environment.json", "git.txt", "git.diff", "requirements.txt"}  # run records
    expected |= {".lock"}  # held by rank 0 while the run lives (src/launch/run_dir.py)
    names = {p.name for p in run_dir.iterdir()}
    events = {n for n in names if n.startswith("events.out.tfevents.")}
    assert len(events) == 1  # one TensorBoard writer: rank 0's
    assert names - events == expected
    assert {p.name for p in (run_dir / ".hydra").iterdir()} == {
        "config.yaml",
        "hydra.yaml",
        "overrides.yaml",
    }
    assert "hydra.output_subdir" not in (run_dir / ".hydra" / "overrides.yaml").read_text()
    log = (run_dir / "main.log").read_text()
    assert log.count("Instantiating model") == 1  # rank 1 logged nothing into it
    rows = read_metrics(run_dir / "metrics.csv")
    keys = [(r["split"], r["step"]) for r in rows]
    assert len(keys) == len(set(keys))  # every logging event once
    names = {p.name for p in (run_dir / "checkpoints").iterdir()}
    assert names == {"last.pt", "best.pt", "step-0000015.pt"}


def test_resumed_two_rank_run_with_accumulation_matches_the_uninterrupted_run(
    runs: dict[str, Path],
) -> None:
    assert _steps(runs["resumed"]) == 15
    assert_same(model_of(runs["resumed"]), model_of(runs["ddp"]), **TOL)
    rows = read_metrics(runs["resumed"] / "metrics.csv")
    train = [int(r["step"]) for r in rows if r["split"] == "train"]
    assert train == sorted(set(train)) and train[-1] == 15  # one metrics.csv, no step twice


def test_other_ranks_do_not_write_hydra_files(monkeypatch: pytest.MonkeyPatch) -> None:
    argv = ["main", "seed=1"]
    monkeypatch.delenv("RANK", raising=False)
    assert quiet_other_ranks(argv) == argv
    monkeypatch.setenv("RANK", "1")
    quiet = quiet_other_ranks(argv)
    assert quiet == [*argv, "hydra.output_subdir=null", "hydra/job_logging=disabled"]
    own = ["main", "hydra/job_logging=stdout"]
    assert quiet_other_ranks(own) == [*own, "hydra.output_subdir=null"]
    resumed = ["main", "resume=x", "hydra.output_subdir=.hydra/resume-20260101-000000-000001"]
    quiet = quiet_other_ranks(resumed)  # resume_argv's own record: rank 0's alone
    assert quiet == [*resumed[:2], "hydra.output_subdir=null", "hydra/job_logging=disabled"]


def test_sigusr1_in_ddp_validation_requeues_and_the_resumed_run_equals_the_uninterrupted(
    runs: dict[str, Path], data_root: Path, tmp_path: Path
) -> None:
    calls = tmp_path / "calls"
    fake = tmp_path / "bin" / "scontrol"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    fake.chmod(0o755)
    run_dir = tmp_path / "preempted"  # as runs["ddp"]; 30 validation batches of 50 ms per rank
    args = overrides(data_root, run_dir, "data.eval_batch_size=2")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "EVAL_DELAY_S": "0.05"}
    env |= {"PATH": f"{fake.parent}:{os.environ['PATH']}", "SLURM_JOB_ID": "4242"}
    env |= {"PYTHONPATH": os.pathsep.join([str(REPO / "test"), str(REPO)])}
    env |= {"TORCHELASTIC_SIGNALS_TO_HANDLE": "SIGTERM,SIGINT,SIGUSR1"}  # as launch.sh sets
    env |= {"PET_SIGNALS_TO_HANDLE": "SIGTERM,SIGINT,SIGUSR1"}
    env.pop("RUN_STAMP", None)
    command = [TORCHRUN, "--standalone", "--nproc_per_node", "2", "-m", "ddp_probe", *args]
    proc = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True, stderr=subprocess.STDOUT
    )
    metrics = run_dir / "metrics.csv"
    deadline = time.monotonic() + 240
    while not (metrics.is_file() and "\n12,0,train," in metrics.read_text()):
        assert time.monotonic() < deadline and proc.poll() is None, "no step 12"
        time.sleep(0.01)
    time.sleep(0.3)  # inside the 1.5 s validation of epoch 0
    proc.send_signal(signal.SIGUSR1)  # torchrun forwards it to both ranks, as under SLURM
    output = proc.communicate(timeout=240)[0]
    assert calls.read_text().splitlines() == ["requeue 4242"], output[-3000:]
    assert "stopped by signal 10 at step 12 before validation" in output
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["state"]
    assert (state["epoch"], state["batch_in_epoch"], state["step"]) == (0, 12, 12)
    assert not [r for r in read_metrics(metrics) if r["split"] == "val"]
    resume = [TORCHRUN, "--standalone", "--nproc_per_node", "2", "-m", "src.main"]
    launch([*resume, f"resume={run_dir}"])
    assert_same(model_of(run_dir), model_of(runs["ddp"]))  # bit for bit
    rows = read_metrics(metrics)
    assert [r["step"] for r in rows if r["split"] == "val"] == ["12", "15"]


def test_slurm_dry_run_prints_a_valid_requeueing_sbatch_script(tmp_path: Path) -> None:
    args = ["--slurm", "--dry-run", "--nodes", "2", "--gpus", "4", "--time", "01:30:00"]
    args += ["--partition", "gpu", "--account", "proj", "model=mlp", "optimizer.lr=0.01"]
    done = subprocess.run(
        ["./launch.sh", *args], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    script = tmp_path / "job.sbatch"
    script.write_text(done.stdout)
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    lines = done.stdout.splitlines()
    assert lines[0] == "#!/usr/bin/env bash"
    for line in (
        "#SBATCH --nodes=2",
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --time=01:30:00",
        "#SBATCH --partition=gpu",
        "#SBATCH --account=proj",
        "#SBATCH --signal=USR1@90",
        "#SBATCH --requeue",
        "export TORCH_ELASTIC_SHUTDOWN_TIMEOUT=80",  # torchrun's grace above a save's time
    ):
        assert line in lines, line
    assert "PET_SIGNALS_TO_HANDLE=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1 " in done.stdout
    launch_line = " ".join(lines[lines.index(next(x for x in lines if x.startswith("srun"))) :])
    for part in ("--nproc_per_node 4", '--rdzv_id "$SLURM_JOB_ID"', "-m src.main"):
        assert part in launch_line, part
    tail = '"hydra.run.dir=outputs/slurm-$SLURM_JOB_ID" resume=auto model=mlp optimizer.lr=0.01'
    assert launch_line.endswith(tail)


def test_preempted_rank0_requeues_its_slurm_job(tmp_path: Path) -> None:
    log = tmp_path / "calls"
    fake = tmp_path / "bin" / "scontrol"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    fake.chmod(0o755)
    env = {"PATH": f"{fake.parent}:{os.environ['PATH']}", "SLURM_JOB_ID": "4242"}
    assert not requeue_if_preempted(143, World(), env)  # SIGTERM: a cancel, not a pre-emption
    assert not requeue_if_preempted(138, World(rank=1, world_size=2), env)  # rank 0 only
    assert not requeue_if_preempted(138, World(), {"PATH": env["PATH"]})  # not under SLURM
    assert not log.exists()
    assert requeue_if_preempted(138, World(), env)
    assert requeue_if_preempted(
        138, World(), {**env, "SLURM_ARRAY_JOB_ID": "7", "SLURM_ARRAY_TASK_ID": "3"}
    )
    assert log.read_text().splitlines() == ["requeue 4242", "requeue 7_3"]


def test_submitit_local_launcher_runs_a_two_job_multirun(
    cli, data_root: Path, tmp_path: Path
) -> None:
    sweep = tmp_path / "sweep"
    args = [o for o in tiny_overrides(data_root, tmp_path / "unused") if "hydra.run" not in o]
    result = cli(
        "--multirun",
        "hydra/launcher=submitit_local",
        f"hydra.sweep.dir={sweep}",
        *args,
        "runner.max_steps=2",
        "seed=0,1",
        env={"OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for job in ("0", "1"):
        results = json.loads((sweep / job / "results.json").read_text())
        assert results["status"] == "completed" and results["steps"] == 2
    assert (sweep / ".submitit").is_dir()


def test_bf16_autocast_with_clipping_trains_on_cpu(cli, data_root: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = tiny_overrides(data_root, run_dir)
    extra = ["runner.precision=bf16", "runner.gradient_clip_val=1.0", "runner.max_steps=14"]
    result = cli(*args, *extra, env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    train = [r for r in read_metrics(run_dir / "metrics.csv") if r["split"] == "train"]
    assert float(train[-1]["loss"]) < float(train[0]["loss"])
    assert json.loads((run_dir / "results.json").read_text())["test/acc"] > 0.5


@pytest.mark.skipif(
    shutil.which("cc") is None and shutil.which("gcc") is None,
    reason="torch.compile's CPU backend (inductor) needs a C compiler",
)
def test_compiled_model_trains_and_saves_plain_weights(
    cli, data_root: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    args = tiny_overrides(data_root, run_dir)
    extra = ["model=mlp", "scheduler=none", "runner.compile=true", "runner.max_steps=2"]
    result = cli(*args, *extra, env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    weights = model_of(run_dir)
    assert not any(k.startswith("_orig_mod.") for k in weights)  # loads into an uncompiled model


@pytest.mark.parametrize(
    ("flags", "forwarded"),
    [
        (["--nproc", "4"], "--nproc_per_node 4 --standalone"),
        (
            ["--nproc", "8", "--nnodes", "2", "--node-rank", "1", "--master-addr", "host0"],
            "--nproc_per_node 8 --nnodes 2 --node_rank 1 --master_addr host0 --master_port 29500",
        ),
        (
            ["--nproc", "2", "--max-restarts", "3"],
            "--nproc_per_node 2 --max_restarts 3 --standalone",
        ),
        (
            ["--nproc", "8", "--nnodes", "2", "--rdzv-endpoint", "host0:29400"],
            "--nnodes 2 --rdzv_backend c10d --rdzv_endpoint host0:29400 --rdzv_id exp1",
        ),
    ],
)
def test_launch_forwards_torchrun_flags(flags: list[str], forwarded: str) -> None:
    env = {**os.environ, "TORCHRUN": "echo", "RUN_STAMP": "exp1"}
    done = subprocess.run(
        ["./launch.sh", *flags, "seed=1"], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("+ echo ") and f"{forwarded} -m src.main seed=1" in done.stdout
