"""A run directory is a complete record, and `make eval RUN=...` needs nothing else."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import torch

from helpers import tiny_overrides
from src.reporting import records

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run_dir(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("records") / "run"
    args = [*tiny_overrides(data_root, run), "runner.max_steps=12", "seed=3"]
    result = subprocess.run(
        [sys.executable, "-m", "src.main", *args], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return run


def test_run_directory_holds_every_record(run_dir: Path) -> None:
    assert "seed: 3" in (run_dir / ".hydra" / "config.yaml").read_text()
    assert "seed=3" in (run_dir / ".hydra" / "overrides.yaml").read_text()
    env = json.loads((run_dir / "environment.json").read_text())
    assert env["python"] == sys.version.split()[0] and env["torch"] == torch.__version__
    for key in ("torchvision", "cuda", "cudnn", "device", "device_name", "hostname", "argv"):
        assert key in env, key
    assert env["device"] == "cpu" and "seed=3" in env["argv"]
    git = (run_dir / "git.txt").read_text()
    assert re.search(r"^commit: [0-9a-f]{40}$", git, re.M), git
    assert (run_dir / "git.diff").is_file()
    frozen = (run_dir / "requirements.txt").read_text().splitlines()
    assert f"torch=={version('torch')}" in frozen and any(
        r.startswith("hydra-core==") for r in frozen
    )
    for name in ("metrics.csv", "results.json", "curves.png", "checkpoints/best.pt"):
        assert (run_dir / name).is_file(), name


def test_make_eval_from_a_moved_run_dir_reproduces_the_test_accuracy(
    run_dir: Path, tmp_path: Path
) -> None:
    moved = tmp_path / "archived-run"
    shutil.copytree(run_dir, moved)
    venv = Path(sys.executable).parent.parent
    result = subprocess.run(
        ["make", "-s", "-C", str(REPO), "eval", f"RUN={moved}", f"VENV={venv}"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    expected = json.loads((run_dir / "results.json").read_text())
    got = json.loads((moved / "eval" / "best" / "results.json").read_text())
    assert got["test/acc"] == expected["test/acc"] and got["test/loss"] == expected["test/loss"]
    assert got["test/samples"] == expected["test/samples"] == 200


def test_git_state_outside_a_repository(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(records, "PROJECT", tmp_path)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    summary, diff = records.git_state()
    assert summary.startswith("not a git repository") and diff == ""


def test_git_state_records_uncommitted_changes(tmp_path: Path, monkeypatch) -> None:
    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    git("add", "a.py")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    (tmp_path / "a.py").write_text("x = 2\n")
    (tmp_path / "new.py").write_text("")
    monkeypatch.setattr(records, "PROJECT", tmp_path)
    summary, diff = records.git_state()
    assert "dirty: true" in summary and "new.py" in summary
    assert "-x = 1" in diff and "+x = 2" in diff
