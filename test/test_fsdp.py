"""FSDP2 on CPU (gloo, through torchrun): equivalence with one process, sharded checkpoints that
resume on another number of processes, SIGTERM, kill -9 mid-save and elastic restarts.

One chain of real CLI runs of the language model (a char transformer of two blocks, each sharded
on its own, then the root) on a tiny corpus, shared by the tests (module fixture `runs`); the
same seed, global batch of 12 windows, so that 1, 2 and 3 ranks all split it (micro-batches of
6 with accumulate_grad_batches=2 under FSDP, so the gradient sync switch is covered), gradient
clipping at 0.5 (it clips: the norm is taken across shards), SGD at a constant rate, 15 steps, a
checkpoint every 3 steps:
  single    one process, the default strategy: the reference
  fsdp      2 ranks, runner.strategy=fsdp, uninterrupted
  to_one    fsdp's step-6 checkpoint (written by 2 ranks) resumed on 1 process to step 15
  to_two    to_one's step-9 checkpoint (written by 1 process) resumed on 2 ranks, saving in the
            background (runner.fsdp.async_save); SIGTERM to both ranks mid-run (exit 143), then
            `resume=auto` on 3 ranks to step 15 (the checkpoint SIGTERM left, of 2 ranks, on 3)
  elastic   2 ranks with --max_restarts 1: rank 1 of the first attempt kills itself (SIGKILL)
            as it writes its shard of step 9; torchrun restarts the group, which resumes from
            step 6 on its own and finishes
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
import torch

from conftest import REPO
from helpers import with_overrides
from src import build
from src.eval import evaluate_checkpoint, load_trained
from src.reporting.logger import read_metrics
from src.sample import SampleOptions, sample
from src.training.checkpoint import load_checkpoint

TORCHRUN = [str(Path(sys.executable).with_name("torchrun")), "--standalone", "--nproc_per_node"]
COMMON = [
    "task=language_model",
    "data.block_size=16",
    "data.batch_size=12",
    "data.eval_batch_size=16",
    "model.n_layer=2",
    "model.n_head=2",
    "model.n_embd=16",
    "device=cpu",
    "runner.progress=log",
    "runner.log_every_n_steps=2",
    "optimizer=sgd",
    "scheduler=none",
    "runner.max_epochs=2",
    "runner.max_steps=15",
    "runner.gradient_clip_val=0.5",
]
FSDP = [
    "runner.strategy=fsdp",  # runner.fsdp.shard_modules=[Block]: each block, then the root
    "data.batch_size=6",
    "runner.accumulate_grad_batches=2",
    "runner.checkpoint_every_n_steps=3",
    "runner.keep_last_k=10",
]
TOL = {"rtol": 1e-4, "atol": 1e-5}


def overrides(corpus: Path, run_dir: Path, *extra: str) -> list[str]:
    """COMMON with `extra` replacing the values of the same keys."""
    return with_overrides(COMMON, *extra, f"data.path={corpus}", f"hydra.run.dir={run_dir}")


def environment(**extra: str) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **extra}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "test"), str(REPO)])
    env["PET_SIGNALS_TO_HANDLE"] = env["TORCHELASTIC_SIGNALS_TO_HANDLE"] = "SIGTERM,SIGINT"
    for key in ("HYDRA_FULL_ERROR", "RUN_STAMP"):
        env.pop(key, None)
    return env


def start(command: list[str], **env: str) -> subprocess.Popen[str]:
    output = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}
    return subprocess.Popen(command, cwd=REPO, env=environment(**env), **output)


def children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@contextmanager
def ended(proc: subprocess.Popen[str]) -> Iterator[subprocess.Popen[str]]:
    """A run that fails the test (a timeout, an assertion) is killed with its ranks: torchrun's
    workers would otherwise outlive the test, each waiting on the other."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            for pid in [*children(proc.pid), proc.pid]:
                with suppress(ProcessLookupError):  # it ended meanwhile
                    os.kill(pid, signal.SIGKILL)
            proc.wait()


def launch(command: list[str], **env: str) -> str:
    with ended(start(command, **env)) as proc:
        output = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, output[-6000:]
    return output


def sigterm_both_ranks(command: list[str], metrics: Path, after_step: int) -> str:
    """Run under torchrun, SIGTERM both ranks (as SLURM signals every task) once the metrics
    show `after_step`; the output of the run."""
    with ended(start(command, STEP_DELAY_S="0.2")) as proc:
        deadline = time.monotonic() + 240
        while not (metrics.is_file() and f"\n{after_step}," in metrics.read_text()):
            assert time.monotonic() < deadline and proc.poll() is None, "no such step"
            time.sleep(0.02)
        for pid in children(proc.pid):
            os.kill(pid, signal.SIGTERM)
        return proc.communicate(timeout=240)[0]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fsdp")
    corpus = root / "corpus.txt"  # about 4k characters of small, regular Python
    corpus.write_text("".join(f"def f{i}(x):\n    return x * {i % 7}\n" for i in range(160)))
    dirs = {name: root / name for name in ("single", "fsdp", "to_one", "to_two", "elastic")}
    main = ["-m", "src.main"]
    launch([sys.executable, *main, *overrides(corpus, dirs["single"])])
    launch([*TORCHRUN, "2", *main, *overrides(corpus, dirs["fsdp"], *FSDP)])
    shutil.copytree(dirs["fsdp"] / "checkpoints" / "step-0000006", root / "from6")
    to_one = overrides(corpus, dirs["to_one"], *FSDP, f"resume={root / 'from6'}")
    dirs["to_one.log"] = root / "to_one.log"
    dirs["to_one.log"].write_text(launch([sys.executable, *main, *to_one]))
    shutil.copytree(dirs["to_one"] / "checkpoints" / "step-0000009", root / "from9")
    background = "runner.fsdp.async_save=true"
    to_two = overrides(corpus, dirs["to_two"], *FSDP, background, f"resume={root / 'from9'}")
    output = sigterm_both_ranks(
        [*TORCHRUN, "2", "-m", "ddp_probe", *to_two], dirs["to_two"] / "metrics.csv", 10
    )
    dirs["sigterm.log"] = root / "sigterm.log"
    dirs["sigterm.log"].write_text(output)
    shutil.copytree(dirs["to_two"] / "checkpoints", root / "stopped")  # as SIGTERM left it
    again = [f"hydra.run.dir={dirs['to_two']}", "resume=auto"]  # replays async_save too
    dirs["on_three.log"] = root / "on_three.log"
    dirs["on_three.log"].write_text(launch([*TORCHRUN, "3", *main, *again]))
    elastic = [*TORCHRUN, "2", "--max_restarts", "1", "-m", "ddp_probe"]
    log = launch([*elastic, *overrides(corpus, dirs["elastic"], *FSDP)], KILL_IN_SAVE_AT_STEP="9")
    dirs["elastic.log"] = root / "elastic.log"
    dirs["elastic.log"].write_text(log)
    return {**dirs, "corpus": corpus}


def params(checkpoint: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's weights consolidated into a plain model on this one process."""
    return load_trained(checkpoint, []).model.state_dict()


def assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], **TOL, msg=key)


def train_losses(run_dir: Path) -> dict[str, float]:
    rows = read_metrics(run_dir / "metrics.csv")
    return {r["step"]: float(r["loss"]) for r in rows if r["split"] == "train"}


def test_two_rank_fsdp_matches_one_process(runs: dict[str, Path]) -> None:
    last = runs["fsdp"] / "checkpoints" / "last"
    shards = ["__0_0.distcp", "__1_0.distcp"]  # every rank wrote its own, rank 0 the metadata
    assert sorted(p.name for p in last.iterdir()) == [".metadata", *shards, "meta.pt"]
    assert load_checkpoint(last)["state"]["step"] == 15
    assert_close(params(last), params(runs["single"] / "checkpoints" / "last.pt"))
    single, fsdp = train_losses(runs["single"]), train_losses(runs["fsdp"])
    assert list(single) == list(fsdp) and len(fsdp) >= 7
    assert list(fsdp.values()) == pytest.approx(list(single.values()), rel=1e-4)
    results = [json.loads((runs[k] / "results.json").read_text()) for k in ("single", "fsdp")]
    assert results[1]["test/loss"] == pytest.approx(results[0]["test/loss"], rel=1e-4)
    assert results[1]["world_size"] == 2


def test_a_two_rank_checkpoint_continues_on_one_process(runs: dict[str, Path]) -> None:
    assert "Resumed from" in runs["to_one.log"].read_text()
    uninterrupted = params(runs["fsdp"] / "checkpoints" / "last")
    assert_close(params(runs["to_one"] / "checkpoints" / "last"), uninterrupted)  # 2 -> 1


def test_a_one_process_checkpoint_continues_on_two_ranks_and_theirs_on_three(
    runs: dict[str, Path],
) -> None:
    """to_one's checkpoint resumed on 2 ranks until SIGTERM, and the checkpoint SIGTERM left
    (2 ranks, saved in the background) resumed on 3: the parameters and the last logged loss
    of the run that trained on 2 ranks throughout."""
    log = runs["on_three.log"].read_text()
    assert "Resumed from" in log and "the root sharded over 3 ranks" in log, log[-3000:]
    last = runs["to_two"] / "checkpoints" / "last"
    assert {"__0_0.distcp", "__1_0.distcp", "__2_0.distcp"} <= {p.name for p in last.iterdir()}
    assert_close(params(last), params(runs["fsdp"] / "checkpoints" / "last"))  # 1 -> 2 -> 3
    fsdp = train_losses(runs["fsdp"])
    assert train_losses(runs["to_two"])["15"] == pytest.approx(fsdp["15"], rel=1e-4)
    assert json.loads((runs["to_two"] / "results.json").read_text())["world_size"] == 3


def test_sigterm_under_fsdp_writes_a_complete_sharded_checkpoint_and_exits_143(
    runs: dict[str, Path],
) -> None:
    output = runs["sigterm.log"].read_text()
    assert output.count("stopped by signal 15 at step") >= 2, output[-3000:]  # both ranks
    assert "exitcode  : 143" in output or "exitcode: 143" in output, output[-3000:]
    stopped = runs["to_two"].parent / "stopped"
    kept = load_checkpoint(stopped / "last")
    assert 10 <= kept["state"]["step"] < 15
    assert {".metadata", "__0_0.distcp", "__1_0.distcp", "meta.pt"} <= {
        p.name for p in (stopped / "last").iterdir()
    }
    assert not list(stopped.glob(".*.tmp"))


def test_kill_9_mid_save_keeps_the_previous_checkpoint_and_the_restarted_group_resumes(
    runs: dict[str, Path],
) -> None:
    log = runs["elastic.log"].read_text()
    assert "torchrun restarted the workers" in log, log[-3000:]
    assert "at epoch 0, step 6" in log  # step 9 was never committed: last was step 6
    assert_close(
        params(runs["elastic"] / "checkpoints" / "last"),
        params(runs["fsdp"] / "checkpoints" / "last"),
    )
    checkpoints = runs["elastic"] / "checkpoints"
    assert not list(checkpoints.glob(".*.tmp"))  # the half folder went with the resume
    rows = read_metrics(runs["elastic"] / "metrics.csv")
    steps = [int(r["step"]) for r in rows if r["split"] == "train"]
    assert steps == sorted(set(steps)) and steps[-1] == 15


def test_eval_consolidates_a_sharded_checkpoint_on_one_process(runs: dict[str, Path]) -> None:
    best = runs["fsdp"] / "checkpoints" / "best"
    results = evaluate_checkpoint(best, [])
    expected = json.loads((runs["fsdp"] / "results.json").read_text())
    for key in ("test/loss", "test/bpc"):
        assert results[key] == pytest.approx(expected[key], rel=1e-6)


def test_sample_reads_a_sharded_checkpoint_on_one_process(runs: dict[str, Path]) -> None:
    best = runs["fsdp"] / "checkpoints" / "best"
    trained = load_trained(best, [])
    text = sample(trained, SampleOptions(prompt="def ", length=20, temperature=0.0))
    assert text.startswith("def ") and len(text) == 24
    assert set(text) <= set(runs["corpus"].read_text())


def test_a_restarted_worker_group_resumes_its_own_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from src.training.resume import elastic_restart

    argv = ["main", "seed=1"]
    monkeypatch.delenv("TORCHELASTIC_RESTART_COUNT", raising=False)
    assert elastic_restart(argv, "outputs", "2026-01-01/torchrun-x") == argv  # first attempt
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    restarted = elastic_restart(argv, "outputs", "2026-01-01/torchrun-x")
    assert restarted == [*argv, "resume=auto", "hydra.run.dir=outputs/2026-01-01/torchrun-x"]
    own = ["main", "output_root=/runs", "hydra.run.dir=/runs/a"]
    assert elastic_restart(own, "outputs", "x")[1:] == [*own[1:2], "resume=auto", own[2]]
    given = ["main", "resume=/elsewhere/step-0000006", f"hydra.run.dir={tmp_path}"]
    assert elastic_restart(given, "outputs", "x") == given  # until the run has a checkpoint
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.pt").touch()
    assert elastic_restart(given, "outputs", "x")[1:] == ["resume=auto", given[2]]


def test_either_strategy_reads_the_other_ones_checkpoint_on_one_process(
    runs: dict[str, Path],
) -> None:
    from src.launch.distributed import World
    from src.training.strategy import FSDPOptions, Replicated, Sharded

    single = runs["single"] / "checkpoints" / "last.pt"
    sharded = runs["fsdp"] / "checkpoints" / "last"
    for strategy, path in ((Sharded(World(), FSDPOptions()), single), (Replicated(), sharded)):
        model = build.build_model(load_trained(path, []).cfg, torch.device("cpu"))  # fresh
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        strategy.load_state(model, optimizer, load_checkpoint(path), str(path))
        assert_close(model.state_dict(), params(path))
        momentum = [optimizer.state[p]["momentum_buffer"] for p in model.parameters()]
        assert len(momentum) == len(list(model.parameters()))
        assert all(m.abs().sum() > 0 for m in momentum)


def test_cpu_offload_without_a_gpu_is_refused_in_one_line() -> None:
    from src.launch.distributed import DeviceError, World
    from src.training.strategy import FSDPOptions, Sharded

    two_ranks = Sharded(World(world_size=2), FSDPOptions(cpu_offload=True))
    with pytest.raises(DeviceError, match="cpu_offload=true needs device=cuda"):
        two_ranks.wrap(torch.nn.Linear(2, 2), torch.device("cpu"))
