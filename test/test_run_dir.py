"""One run per run directory: a second process is refused, a used folder is not reused by a
fresh run, a failed start leaves nothing behind, and two launches never share a stamp."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import forkserver

from helpers import REPO, tiny_overrides


def digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def one_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_two_launches_in_the_same_second_and_folder_one_trains_the_other_is_refused(
    cli, data_root: Path, tmp_path: Path
) -> None:
    # Both get the same stamp (as two launches within one second did): the same folder.
    args = [*tiny_overrides(data_root, tmp_path)[:-1], f"output_root={tmp_path}"]
    args += ["data.batch_size=10", "runner.max_steps=60"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "RUN_STAMP": "same-second"}
    run_dir = tmp_path / "same-second"
    first = forkserver.start("src.main", args, REPO, env, capture="merged")
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / "metrics.csv").is_file() and time.monotonic() < deadline:
            time.sleep(0.01)
        first.send_signal(signal.SIGSTOP)  # frozen mid-training: its files must not move
        before = digests(run_dir)
        second = cli(*args, env={"RUN_STAMP": "same-second"})
        assert digests(run_dir) == before
    finally:
        first.send_signal(signal.SIGCONT)
    output = first.communicate(timeout=120)[0]
    assert first.returncode == 0, output
    line = one_line(second)
    assert f"{run_dir} is in use by another run (pid {first.pid} on " in line
    assert (run_dir / "results.json").is_file() and output.count("Instantiating model") == 1


def test_a_fresh_run_refuses_a_folder_that_holds_another_run(
    cli, data_root: Path, finished_run: Path
) -> None:
    before = digests(finished_run)
    line = one_line(cli(*tiny_overrides(data_root, finished_run), "runner.max_steps=2"))
    assert f"{finished_run} already holds a run" in line and f"resume={finished_run}" in line
    assert digests(finished_run) == before


def test_failed_starts_leave_no_run_directory(cli, data_root: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "day" / "run"  # its parent is made for it too, and removed with it
    args = tiny_overrides(data_root, run_dir)  # (bad values: test_config.py checks the same)
    empty = tmp_path / "empty"
    line = one_line(cli(*args, "data=fashion_mnist", f"data.root={empty}"))
    assert line.count("data files missing") == 1  # said once, not repeated by Hydra's wrapper
    line = one_line(cli(*args, "data.batch_size=1000"))  # 500 training images: no full batch
    assert "this run would take no training step" in line and "data.batch_size=1000" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_two_launches_in_one_second_get_different_stamps(tmp_path: Path) -> None:
    fake = tmp_path / "python"  # what launch.sh would run: it prints the stamp it was given
    fake.write_text('#!/bin/sh\necho "$RUN_STAMP"\n')
    fake.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "RUN_STAMP"} | {"PYTHON": str(fake)}
    launches = [
        subprocess.Popen(["./launch.sh"], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    stamps = [p.communicate(timeout=60)[0].split()[-1] for p in launches]
    assert stamps[0] != stamps[1]
    code = "from src.launch.run_stamp import run_stamp; print(run_stamp())"
    plain = [
        subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env, stdout=subprocess.PIPE)
        for _ in range(2)
    ]
    names = [p.communicate(timeout=60)[0] for p in plain]
    assert names[0] != names[1]
