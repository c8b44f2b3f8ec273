"""Evaluate a checkpoint on the test set, using only what the checkpoint holds.

    python -m src.eval ckpt=outputs/<date>/<time>/checkpoints/best.pt
    python -m src.eval ckpt=outputs/<date>/<time>/checkpoints/best   # a sharded (FSDP) one
    python -m src.eval run=outputs/<date>/<time>            # that run's best.pt
    python -m src.eval run=... device=cpu data.root=/elsewhere  # optional overrides
    python -m src.eval ckpt=... out=<file.json>             # results elsewhere

The model, the task and the data are rebuilt from the resolved config stored inside the
checkpoint, so the original command line is not needed. A checkpoint may come from someone
else: its config may only name the project's own classes (src/config/trust.py), and the data is
never downloaded into the folder it names unless `data.download=true` is given here. The task's
metrics go to `<run dir>/eval/<checkpoint name>/results.json` (best, last, step-0000123, ...),
or to `<name>.eval.json` beside a checkpoint that lies outside a run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from src import build
from src.common.args import key_values
from src.common.files import atomic_write_json
from src.config.trust import check_untrusted_config
from src.launch.cli import run_script
from src.launch.distributed import World, resolve_device
from src.reporting.results import final_line
from src.runner import Runner
from src.task.base import Task
from src.training.checkpoint import CheckpointError, load_checkpoint, run_dir_of
from src.training.sharded import load_model

log = logging.getLogger(__name__)
USAGE = (
    "usage: python -m src.eval ckpt=<file.pt or sharded folder> | run=<run dir> [out=<file.json>] "
    "[key=value ...]"
)


@dataclass
class Trained:
    """What a checkpoint rebuilds: its config (with overrides), model, task and data facts."""

    cfg: DictConfig
    model: nn.Module
    task: Task
    device: torch.device
    payload: dict[str, Any]

    @property
    def data_info(self) -> dict[str, Any]:
        return dict(self.payload.get("data_info") or {})


def parse_args(argv: list[str]) -> tuple[Path, Path | None, list[str]]:
    """`ckpt=` or `run=` picks the checkpoint, `out=` the results file; other key=value pairs
    override its config."""
    pairs, unknown = key_values(argv)
    if unknown or ("ckpt" in pairs) == ("run" in pairs):
        raise CheckpointError(USAGE)
    if "ckpt" in pairs:
        path = Path(pairs.pop("ckpt"))
    else:  # best.pt, or best: a sharded checkpoint's folder
        best = Path(pairs.pop("run")) / "checkpoints" / "best.pt"
        path = best if best.exists() or not best.with_suffix("").exists() else best.with_suffix("")
    out = Path(pairs.pop("out")) if "out" in pairs else None
    return path, out, [f"{k}={v}" for k, v in pairs.items()]


def results_path(checkpoint: Path) -> Path:
    """One results file per checkpoint, inside its run (or beside a loose checkpoint)."""
    run = run_dir_of(checkpoint)
    if run is not None:
        return run / "eval" / checkpoint.stem / "results.json"
    return checkpoint.resolve().parent / f"{checkpoint.stem}.eval.json"


def load_trained(path: Path, overrides: list[str]) -> Trained:
    """The config stored in the checkpoint (with overrides), its model with the saved weights."""
    payload = load_checkpoint(path)
    if "config" not in payload:
        raise CheckpointError(f"{path} holds no config to rebuild the model from")
    check_untrusted_config(payload["config"], str(path))  # nothing the project did not ship
    # A single pass is not worth a compile, and a file never makes us download into a folder
    # it names; any override given here still wins.
    safe = ["runner.compile=false"]
    if "download" in (payload["config"].get("data") or {}):
        safe.append("data.download=false")
    given = OmegaConf.from_dotlist([*safe, *overrides])
    cfg: DictConfig = OmegaConf.merge(payload["config"], given)  # type: ignore[assignment]
    device = resolve_device(cfg.device, World())
    model = build.build_model(cfg, device)
    # the EMA average when the run kept one; a sharded checkpoint is consolidated here
    load_model(getattr(model, "_orig_mod", model), payload, path)
    return Trained(cfg, model.eval(), build.build_task(cfg), device, payload)


def evaluate_checkpoint(path: Path, overrides: list[str]) -> dict[str, Any]:
    trained = load_trained(path, overrides)
    loaders = build.build_loaders(trained.cfg, trained.device, World())
    no_updates = torch.optim.SGD(trained.model.parameters(), lr=0.0)  # evaluate() only
    runner = Runner(trained.model, no_updates, trained.task, trained.device)
    results: dict[str, Any] = dict(runner.evaluate(loaders.test, "test"))
    results.update({"checkpoint": str(path), "step": trained.payload["state"]["step"]})
    return results


def main(argv: list[str]) -> dict[str, Any]:
    path, out, overrides = parse_args(argv)
    results = evaluate_checkpoint(path, overrides)
    out = out or results_path(path)
    atomic_write_json(out, results)
    print(f"{final_line(results)}  -> {out}")
    return results


if __name__ == "__main__":
    run_script(main)
