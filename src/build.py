"""Config -> objects. `main.py` (training), `eval.py` and `predict.py` build the same way."""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict
from torch import nn

from src.config.validate import ConfigError
from src.data.loaders import Loaders
from src.launch.distributed import World
from src.task.base import Task
from src.training.callbacks import Callback
from src.training.early_stopping import EarlyStopping
from src.training.ema import EMA
from src.training.options import epoch_length

log = logging.getLogger(__name__)


def build_task(cfg: DictConfig) -> Task:
    """The task first: its metric names are checked against runner.monitor before any work."""
    log.info("Instantiating task <%s>", cfg.task._target_)
    task: Task = instantiate(cfg.task)
    known = [f"val/{name}" for name in task.metric_names]
    if cfg.runner.monitor not in known:
        raise ConfigError(
            f"runner.monitor={cfg.runner.monitor} is not a metric of {type(task).__name__}; "
            f"it reports {', '.join(known)}"
        )
    return task


def build_loaders(cfg: DictConfig, device: torch.device, world: World) -> Loaders:
    log.info("Instantiating data <%s>", cfg.data._target_)
    loaders: Loaders = instantiate(
        cfg.data, seed=cfg.seed, device=device, rank=world.rank, world_size=world.world_size
    )
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
    model: nn.Module = instantiate(cfg.model)
    model = model.to(device)
    if cfg.runner.channels_last:  # convolutions pick NHWC kernels; a no-op for 2-d weights
        model = model.to(memory_format=torch.channels_last)
    if cfg.runner.compile:
        model = torch.compile(model)  # type: ignore[assignment]
    return model


def build_optimizer(cfg: DictConfig, model: nn.Module) -> torch.optim.Optimizer:
    log.info("Instantiating optimizer <%s>", cfg.optimizer._target_)
    optimizer: torch.optim.Optimizer = instantiate(cfg.optimizer)(params=model.parameters())
    return optimizer


def planned_steps(cfg: DictConfig, batches_per_epoch: int) -> int:
    """Optimizer steps the whole run will take: what a schedule must span."""
    batches = epoch_length(batches_per_epoch, cfg.runner.limit_train_batches)
    per_epoch = math.ceil(batches / cfg.runner.accumulate_grad_batches)
    total = per_epoch * cfg.runner.max_epochs
    return total if cfg.runner.max_steps < 0 else min(total, cfg.runner.max_steps)


def build_scheduler(
    cfg: DictConfig, optimizer: torch.optim.Optimizer, batches_per_epoch: int
) -> Any:
    if cfg.scheduler is None:
        return None
    log.info("Instantiating scheduler <%s>", cfg.scheduler._target_)
    return instantiate(cfg.scheduler)(optimizer, total_steps=planned_steps(cfg, batches_per_epoch))


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
