"""Shared fixtures: tiny synthetic datasets in the real IDX format, and a CLI runner."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from helpers import REPO, run_cli, write_mnist_like

__all__ = ["REPO"]  # test modules import it from here


@pytest.fixture(scope="session")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_mnist_like(root)
    return root


CLI = Callable[..., subprocess.CompletedProcess]


@pytest.fixture
def cli() -> CLI:
    """Run the real command line (`python -m src.main ...`) in a subprocess."""
    return run_cli
