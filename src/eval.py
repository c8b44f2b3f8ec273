"""Evaluate a checkpoint on the test set, using only what the checkpoint holds.

    python -m src.eval ckpt=outputs/<date>/<time>/checkpoints/best.pt
    python -m src.eval run=outputs/<date>/<time>            # that run's best.pt
    python -m src.eval run=... device=cpu data.root=/elsewhere  # optional overrides

The model and data are rebuilt from the resolved config stored inside the checkpoint, so the
original command line is not needed. Results go to `<run dir>/eval/results.json`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from src import build
from src.common.files import atomic_write_json
from src.launch.cli import run_script
from src.launch.distributed import World, resolve_device
from src.runner import Runner
from src.training.checkpoint import CheckpointError, load_checkpoint, load_model_weights

log = logging.getLogger(__name__)


def parse_args(argv: list[str]) -> tuple[Path, list[str]]:
    """`ckpt=` or `run=` picks the checkpoint; other key=value pairs override its config."""
    pairs = dict(arg.split("=", 1) for arg in argv if "=" in arg)
    unknown = [arg for arg in argv if "=" not in arg]
    if unknown or ("ckpt" in pairs) == ("run" in pairs):
        raise CheckpointError(
            "usage: python -m src.eval ckpt=<file.pt> | run=<run dir> [key=value ...]"
        )
    if "ckpt" in pairs:
        path = Path(pairs.pop("ckpt"))
    else:
        path = Path(pairs.pop("run")) / "checkpoints" / "best.pt"
    return path, [f"{k}={v}" for k, v in pairs.items()]


def load_trained_model(
    path: Path, overrides: list[str]
) -> tuple[DictConfig, nn.Module, torch.device, dict[str, Any]]:
    """The config stored in the checkpoint (with overrides), its model with the saved weights."""
    payload = load_checkpoint(path)
    if "config" not in payload:
        raise CheckpointError(f"{path} holds no config to rebuild the model from")
    # A single pass is not worth a compile; any override given here still wins.
    given = OmegaConf.from_dotlist(["runner.compile=false", *overrides])
    cfg: DictConfig = OmegaConf.merge(payload["config"], given)  # type: ignore[assignment]
    device = resolve_device(cfg.device, World())
    model = build.build_model(cfg, device)
    load_model_weights(getattr(model, "_orig_mod", model), payload["model"], path)
    return cfg, model.eval(), device, payload


def evaluate_checkpoint(path: Path, overrides: list[str]) -> dict[str, Any]:
    cfg, model, device, payload = load_trained_model(path, overrides)
    loaders = build.build_loaders(cfg, device, World())
    runner = Runner(
        model, torch.optim.SGD(model.parameters(), lr=0.0), build.build_criterion(cfg), device
    )
    results: dict[str, Any] = dict(runner.evaluate(loaders.test, "test"))
    results.update({"checkpoint": str(path), "step": payload["state"]["step"]})
    return results


def main(argv: list[str]) -> dict[str, Any]:
    path, overrides = parse_args(argv)
    results = evaluate_checkpoint(path, overrides)
    out = path.resolve().parent.parent / "eval" / "results.json"
    atomic_write_json(out, results)
    print(f"test/acc {results['test/acc']:.4f}  test/loss {results['test/loss']:.4f}  -> {out}")
    return results


if __name__ == "__main__":
    run_script(main)
