"""Shared fixtures: tiny synthetic datasets in the real IDX format, and a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from helpers import write_mnist_like

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_mnist_like(root)
    return root


CLI = Callable[..., subprocess.CompletedProcess]


@pytest.fixture
def cli() -> CLI:
    """Run the real command line (`python -m src.main ...`) in a subprocess."""

    def run(
        *args: str, module: str = "src.main", timeout: float = 300, **kwargs
    ) -> subprocess.CompletedProcess:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)}
        env.pop("HYDRA_FULL_ERROR", None)
        return subprocess.run(
            [sys.executable, "-m", module, *args],
            cwd=kwargs.pop("cwd", REPO),
            env={**env, **kwargs.pop("env", {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            **kwargs,
        )

    return run
