"""Config -> objects. `main.py` (training), `eval.py` and `predict.py` build the same way.

Every `_target_` is instantiated through `build`, which keeps the two kinds of failure apart: a
user mistake (a target that does not exist, arguments that do not fit it, a `UserError` raised
inside it) is one line; an exception raised inside the target's own code is a bug and keeps its
traceback, instead of becoming Hydra's one-line InstantiationException.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from types import TracebackType
from typing import Any

import hydra
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn

from src.common.errors import one_line
from src.config.validate import ConfigError
from src.data.loaders import Loaders
from src.launch.distributed import World, barrier
from src.reporting.trackers import Tracker, check_installed
from src.task.base import Task
from src.training.callbacks import Callback
from src.training.early_stopping import EarlyStopping
from src.training.ema import EMA
from src.training.options import epoch_length

log = logging.getLogger(__name__)
_HYDRA = Path(hydra.__file__).resolve().parent


def build(node: Any, **kwargs: Any) -> Any:
    """`instantiate(node, **kwargs)`; a bug inside the target is re-raised with its traceback."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        if cause is None or _raised_by_hydra(cause.__traceback__):
            raise  # no such target, or arguments that do not fit it: one line
        # A UserError raised inside (missing data, ...) is its own one line; anything else is a
        # bug in the target and keeps the target's traceback, without Hydra's wrapper around it.
        cause.__suppress_context__ = True
        raise cause from cause.__cause__


def _raised_by_hydra(trace: TracebackType | None) -> bool:
    """True when the innermost frame is Hydra's own: the target was never entered."""
    while trace is not None and trace.tb_next is not None:
        trace = trace.tb_next
    return trace is not None and _HYDRA in Path(trace.tb_frame.f_code.co_filename).resolve().parents


def check_compile(cfg: DictConfig) -> None:
    """torch.compile's default backend compiles C++ at the first step; a missing or broken
    compiler is the machine's setup, so say so before any work instead of mid-run."""
    if not cfg.runner.compile:
        return
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler
    except ImportError:  # a torch without this helper: the first step will tell
        return
    try:
        get_cpp_compiler()
    except Exception as err:
        raise ConfigError(
            f"runner.compile=true needs a working C++ compiler ({one_line(err)}): install g++ "
            "or clang++, point CXX at one, or set runner.compile=false"
        ) from err


def build_task(cfg: DictConfig) -> Task:
    """The task first: its metric names are checked against runner.monitor before any work."""
    log.info("Instantiating task <%s>", cfg.task._target_)
    task: Task = build(cfg.task)
    known = [f"val/{name}" for name in task.metric_names]
    if cfg.runner.monitor not in known:
        raise ConfigError(
            f"runner.monitor={cfg.runner.monitor} is not a metric of {type(task).__name__}; "
            f"it reports {', '.join(known)}"
        )
    return task


def build_trackers(cfg: DictConfig, run_dir: Path, sweep_dir: Path | None) -> list[Tracker]:
    """The trackers `logger=[...]` chooses (nothing imported or started yet); a chosen tracker
    that is not installed stops the run here, before any work, with one line."""
    trackers: list[Tracker] = []
    for node in (cfg.get("logger") or {}).values():
        log.info("Instantiating logger <%s>", node._target_)
        trackers.append(build(node, run_dir=run_dir, sweep_dir=sweep_dir, _convert_="all"))
    check_installed(trackers)
    return trackers


def build_loaders(cfg: DictConfig, device: torch.device, world: World) -> Loaders:
    """The data, prepared once: under DDP rank 0 prepares (download, verify) while the other
    ranks wait, then they read what it wrote. (A file lock in src/data/prepare.py does the same
    for separate processes, e.g. parallel sweep trials.)"""
    log.info("Instantiating data <%s>", cfg.data._target_)
    if not world.is_main:
        barrier(world)
    loaders: Loaders = build(
        cfg.data, seed=cfg.seed, device=device, rank=world.rank, world_size=world.world_size
    )
    if world.is_main:
        barrier(world)
    return loaders


def fill_from_data(cfg: DictConfig, info: dict[str, Any]) -> None:
    """Model fields left None (num_classes, in_channels, ...) take the data's values, in `cfg`
    itself, so the config stored in checkpoints names the model exactly."""
    with open_dict(cfg.model):
        for key, value in info.items():
            if key in cfg.model and cfg.model[key] is None:
                cfg.model[key] = value


def build_model(cfg: DictConfig, device: torch.device) -> nn.Module:
    log.info("Instantiating model <%s>", cfg.model._target_)
    model: nn.Module = build(cfg.model)
    model = model.to(device)
    if cfg.runner.channels_last:  # convolutions pick NHWC kernels; a no-op for 2-d weights
        model = model.to(memory_format=torch.channels_last)
    if cfg.runner.compile:
        model = torch.compile(model)  # type: ignore[assignment]
    return model


def build_optimizer(cfg: DictConfig, model: nn.Module) -> torch.optim.Optimizer:
    log.info("Instantiating optimizer <%s>", cfg.optimizer._target_)
    optimizer: torch.optim.Optimizer = build(cfg.optimizer)(params=model.parameters())
    return optimizer


def build_callbacks(cfg: DictConfig, model: nn.Module) -> list[Callback]:
    """EMA of the weights and early stopping, when their runner keys switch them on."""
    callbacks: list[Callback] = []
    ema, stopping = cfg.runner.ema, cfg.runner.early_stopping
    if ema.decay > 0:  # on the bare model: its parameter names are the checkpoint's
        callbacks.append(EMA(getattr(model, "_orig_mod", model), **ema))
    if stopping.patience > 0:
        monitor, mode = cfg.runner.monitor, cfg.runner.monitor_mode
        callbacks.append(EarlyStopping(monitor, mode, **stopping))
    return callbacks


def planned_steps(cfg: DictConfig, batches_per_epoch: int) -> int:
    """Optimizer steps the whole run will take: what a schedule must span."""
    batches = epoch_length(batches_per_epoch, cfg.runner.limit_train_batches)
    per_epoch = math.ceil(batches / cfg.runner.accumulate_grad_batches)
    total = per_epoch * cfg.runner.max_epochs
    return total if cfg.runner.max_steps < 0 else min(total, cfg.runner.max_steps)


def check_trains(cfg: DictConfig, batches_per_epoch: int) -> int:
    """The run's planned optimizer steps; a run that would take none is refused before any
    work (it would otherwise report `completed` having learnt nothing)."""
    steps = planned_steps(cfg, batches_per_epoch)
    if steps > 0:
        return steps
    zero = [
        f"{key}=0"
        for key in ("runner.max_epochs", "runner.max_steps", "runner.limit_train_batches")
        if OmegaConf.select(cfg, key) == 0
    ]
    reason = ", ".join(zero) or (
        f"the training split yields no full batch of data.batch_size="
        f"{OmegaConf.select(cfg, 'data.batch_size')} (lower it)"
    )
    raise ConfigError(f"this run would take no training step: {reason}")


def build_scheduler(cfg: DictConfig, optimizer: torch.optim.Optimizer, total_steps: int) -> Any:
    """The configured schedule over `total_steps` optimizer steps (None: a constant rate)."""
    if cfg.scheduler is None:
        return None
    log.info("Instantiating scheduler <%s> over %d steps", cfg.scheduler._target_, total_steps)
    return build(cfg.scheduler)(optimizer, total_steps=total_steps)
