"""Signals become a stop flag (or, before training, an immediate stop); a second Ctrl-C aborts
at once."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import forkserver
import pytest
import torch

from helpers import REPO, tiny_overrides
from src.launch import signals
from src.launch.distributed import World
from src.launch.signals import Interrupted, StopRequest
from src.training.checkpoint import load_checkpoint


def test_signals_set_the_flag_and_exit_code() -> None:
    for signum, code in ((signal.SIGTERM, 143), (signal.SIGUSR1, 138)):
        with StopRequest() as stop:
            assert not stop.requested
            os.kill(os.getpid(), signum)
            assert stop.requested and stop.exit_code == code


def test_second_ctrl_c_aborts_immediately() -> None:
    with StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.exit_code == 130
        with pytest.raises(Interrupted) as aborted:
            os.kill(os.getpid(), signal.SIGINT)
    assert aborted.value.exit_code == 130 and not isinstance(aborted.value, Exception)


def test_before_training_a_signal_stops_at_once_and_later_only_sets_the_flag() -> None:
    with StopRequest(immediate=True) as stop:
        with pytest.raises(Interrupted) as stopped:
            os.kill(os.getpid(), signal.SIGTERM)
        assert stopped.value.exit_code == 143
        stop.defer()
        os.kill(os.getpid(), signal.SIGUSR1)
        assert stop.requested and stop.exit_code == 138


def test_a_signal_during_the_agreement_counts_at_the_next_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every rank must take the all-reduce's answer: a flag read again after it could differ."""
    stop = StopRequest()

    def all_reduce_meanwhile_signalled(flag: torch.Tensor, world: World) -> bool:
        stop.request(signal.SIGTERM)  # lands while the ranks sum the flags they read
        return bool(flag)

    monkeypatch.setattr(signals, "any_rank", all_reduce_meanwhile_signalled)
    two_ranks, cpu = World(rank=0, world_size=2), torch.device("cpu")
    assert not stop.agreed(two_ranks, cpu)  # the other ranks read no flag: they train on
    assert stop.agreed(two_ranks, cpu) and stop.exit_code == 143


def test_previous_handlers_are_restored() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with StopRequest():
        assert signal.getsignal(signal.SIGTERM) is not before
    assert signal.getsignal(signal.SIGTERM) is before


# ------------------------------------------------------------------ the real CLI, by phase
def spawn(*args: str, **env: str) -> forkserver.Started:
    """The CLI through test/ddp_probe.py (EVAL_DELAY_S slows every evaluation batch)."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
    full_env["PYTHONPATH"] = os.pathsep.join([str(REPO / "test"), str(REPO)])
    return forkserver.start("ddp_probe", list(args), REPO, full_env)


def wait_until(predicate: Callable[[], bool], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def rows(run_dir: Path, split: str) -> list[int]:
    path = run_dir / "metrics.csv"
    lines = path.read_text().splitlines()[1:] if path.is_file() else []
    return [int(line.split(",")[0]) for line in lines if line.split(",")[2] == split]


def stopped(proc: subprocess.Popen, code: int = 143) -> str:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_sigterm_in_validation_and_in_the_test_stops_cleanly_and_resumes(
    data_root: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"  # 10 steps an epoch; 10 validation and 20 test batches
    args = [*tiny_overrides(data_root, run_dir), "data.eval_batch_size=10", "runner.max_epochs=2"]
    slow = {"EVAL_DELAY_S": "0.1"}
    proc = spawn(*args, **slow)
    wait_until(lambda: 10 in rows(run_dir, "train"))  # the epoch's last step: validation next
    time.sleep(0.3)  # a third of the way through validation
    proc.send_signal(signal.SIGTERM)
    line = stopped(proc)
    assert "stopped by signal 15 at step 10 before validation" in line
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")["state"]
    assert (state["epoch"], state["batch_in_epoch"], state["step"]) == (0, 10, 10)
    assert rows(run_dir, "val") == []  # the interrupted validation logged nothing

    proc = spawn(*args, "resume=auto", **slow)  # validates epoch 0 again, trains epoch 1, tests
    wait_until(lambda: 20 in rows(run_dir, "val"))
    time.sleep(0.5)  # last.pt is written, the test (2 s) has begun
    proc.send_signal(signal.SIGTERM)
    line = stopped(proc)
    assert "stopped by signal 15 during test" in line and "resume the run to test again" in line
    assert not (run_dir / "results.json").exists()
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["state"]["finished"]

    proc = spawn(*args, "resume=auto")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, out + err
    assert rows(run_dir, "val") == [10, 20]  # each validation once
    assert json.loads((run_dir / "results.json").read_text())["test/acc"] > 0.5


class SilentProxy:
    """A proxy that accepts connections and never answers: a download that hangs."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.clients: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.getsockname()[1]}"

    def _accept(self) -> None:
        while True:
            try:
                self.clients.append(self.server.accept()[0])
            except OSError:
                return

    def close(self) -> None:
        for client in self.clients:
            client.close()
        self.server.close()


def test_sigterm_during_data_preparation_leaves_no_scratch_and_no_run(tmp_path: Path) -> None:
    root, run_dir = tmp_path / "data", tmp_path / "run"
    proxy = SilentProxy()
    try:
        proxy_env = {key: proxy.url for key in ("http_proxy", "https_proxy", "HTTPS_PROXY")}
        proc = subprocess.Popen(
            [sys.executable, "-m", "src.main", f"data.root={root}", f"hydra.run.dir={run_dir}"],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO), "no_proxy": "", **proxy_env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_until(lambda: bool(proxy.clients))  # torchvision's download, waiting for bytes
        assert list((root / "MNIST").glob(".prepare-*"))
        proc.send_signal(signal.SIGTERM)
        line = stopped(proc)
    finally:
        proxy.close()
    assert line == "stopped by signal 15 before training began"
    assert not list(root.rglob(".prepare-*")) and not list(root.rglob("tmp*"))
    assert not list(root.rglob("*-ubyte")) and not run_dir.exists()
