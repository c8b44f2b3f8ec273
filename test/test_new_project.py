"""`make new-project` makes a fresh, renamed repository whose own tests pass."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VENV = Path(sys.executable).parent.parent  # reuse this venv: no second torch install


def make(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    command = ["make", "-s", "-C", str(cwd), f"VENV={VENV}", f"PYTHON={sys.executable}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def git(dest: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=dest, capture_output=True, text=True, check=True
    ).stdout


def test_new_project_is_renamed_committed_and_its_tests_pass(tmp_path: Path) -> None:
    dest = tmp_path / "projects" / "cat-classifier"
    result = make("new-project", "NAME=cat-classifier", f"DEST={dest}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"cd {dest} && make install" in result.stdout and "make run" in result.stdout
    assert 'name = "cat-classifier"' in (dest / "pyproject.toml").read_text()
    assert "name: cat-classifier" in (dest / "environment.yml").read_text()
    assert (dest / "README.md").read_text().startswith("# cat-classifier\n")
    tracked = set(git(REPO, "ls-files").split())
    copied = {str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file()}
    copied = {p for p in copied if not p.startswith(".git/")}
    assert copied <= tracked and "src/main.py" in copied and "Makefile" in copied
    for absent in ("outputs", ".venv", "data/MNIST", "multirun"):
        assert not (dest / absent).exists(), absent
    assert len(git(dest, "log", "--oneline").splitlines()) == 1
    assert git(dest, "status", "--porcelain") == ""
    tests = make("test", "ARGS=-p no:cacheprovider test/test_models.py", cwd=dest)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "passed" in tests.stdout and "failed" not in tests.stdout


@pytest.mark.parametrize("name", ["-bad", "my project", "café", "ends-", ""])
def test_invalid_name_is_refused_with_one_line(name: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "src.tools.new_project", name, str(tmp_path / "new")],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "not a valid Python distribution name" in lines[0]
    assert not (tmp_path / "new").exists()


def test_non_empty_dest_is_refused_and_left_alone(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    result = make("new-project", "NAME=ok-name", f"DEST={tmp_path}")
    assert result.returncode != 0
    assert f"error: DEST {tmp_path} exists and is not an empty folder" in result.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_dest_under_a_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    dest = tmp_path / "file" / "sub" / "project"
    result = subprocess.run(
        [sys.executable, "-m", "src.tools.new_project", "ok-name", str(dest)],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert (
        result.stderr.strip()
        == f"error: DEST {dest} cannot be created: {tmp_path / 'file'} is a file"
    )


def test_make_new_project_without_arguments_prints_usage() -> None:
    result = make("new-project")
    assert result.returncode != 0 and "usage: make new-project NAME=<name> DEST=<path>" in (
        result.stdout
    )
