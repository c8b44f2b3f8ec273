"""Shared fixtures: tiny synthetic datasets in the real IDX format, and a CLI runner."""

from __future__ import annotations

import os

# One compute thread per process: `make test` runs a worker per core, and each worker's runs
# beside it; more threads than cores only queue. (Set before torch is first imported.)
os.environ.setdefault("OMP_NUM_THREADS", "1")
# `make test ARGS=...` hands ARGS to every make a test runs (make sample, make eval, ...) through
# MAKEFLAGS; those commands must see only their own arguments.
for inherited in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "ARGS"):
    os.environ.pop(inherited, None)

import subprocess  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from helpers import REPO, run_cli, tiny_overrides, write_mnist_like  # noqa: E402

__all__ = ["REPO"]  # test modules import it from here


@pytest.fixture(scope="session")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_mnist_like(root)
    return root


CLI = Callable[..., subprocess.CompletedProcess]


@pytest.fixture(scope="session")
def finished_run(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short real run (3 epochs on the synthetic digits) whose folder tests read from."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    result = run_cli(*tiny_overrides(data_root, run_dir), "runner.max_epochs=3")
    assert result.returncode == 0, result.stderr
    return run_dir


@pytest.fixture
def cli() -> CLI:
    """Run the real command line (`python -m src.main ...`) in a subprocess."""
    return run_cli
