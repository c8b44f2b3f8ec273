"""Every yaml composes against its schema; bad overrides stop with one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.utils import instantiate
from omegaconf import OmegaConf

from src.config.schema import register_configs
from src.config.validate import config_problems

CONFIG_DIR = Path(__file__).resolve().parents[1] / "src" / "config"
GROUPS = ["data", "model", "task", "optimizer", "scheduler", "runner", "logger"]
OPTIONS = [
    (group, path.stem) for group in GROUPS for path in sorted((CONFIG_DIR / group).glob("*.yaml"))
]


def compose_with(*overrides: str):
    register_configs()
    with initialize_config_module("src.config", version_base="1.3"):
        return compose("config", overrides=list(overrides))


@pytest.mark.parametrize(("group", "option"), OPTIONS)
def test_every_option_of_every_group_composes(group: str, option: str) -> None:
    cfg = compose_with(f"{group}={option}")
    assert config_problems(cfg) == []
    node = cfg[group]
    if option == "none":
        assert node is None
    elif "_target_" in node and group in ("task", "optimizer", "scheduler"):  # models: test_models
        assert callable(instantiate(node)) or instantiate(node) is not None


def test_canonical_keys_exist() -> None:
    cfg = compose_with()
    for key in [
        "seed",
        "device",
        "data.root",
        "data.batch_size",
        "optimizer.lr",
        "runner.max_epochs",
        "runner.max_steps",
        "runner.log_every_n_steps",
    ]:
        assert OmegaConf.select(cfg, key, throw_on_missing=True) is not None, key
    assert cfg.runner.max_steps == -1 and cfg.device == "auto"


def test_range_problems_are_reported_together() -> None:
    cfg = compose_with("optimizer.lr=0", "data.batch_size=0", "runner.max_epochs=-1")
    problems = config_problems(cfg)
    assert len(problems) == 3
    assert any("optimizer.lr must be > 0" in p for p in problems)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("runner.nope=1", "Key 'nope' not in 'RunnerConfig'"),
        ("runner.max_epochs=abc", "could not be converted to Integer"),
        ("model=transformer", "Could not find 'model/transformer'"),
        ("optimizer=adagrad", "Available options in 'optimizer': adamw, sgd"),
        ("optimizer.lr=-0.1", "optimizer.lr must be > 0.0"),
        ("data.batch_size=0", "data.batch_size must be >= 1"),
        ("device=tpu", "Invalid value 'tpu', expected one of [auto, cpu, cuda, mps]"),
        ("optimizer.lr=nan", "optimizer.lr must be a number (got nan)"),
        ("runner.monitor=val/foo", "runner.monitor=val/foo is not a metric of Classification"),
        pytest.param(
            "device=cuda",
            "device=cuda but no CUDA device is available",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA"),
        ),
    ],
)
def test_invalid_override_exits_with_one_readable_line(
    cli, override: str, expected: str, tmp_path: Path
) -> None:
    result = cli(override, f"hydra.run.dir={tmp_path / 'run'}", "runner.max_steps=1")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and expected in lines[0]
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "run").exists()  # a failed start leaves no run directory
