"""Config -> objects. `main.py` (training) and `eval.py` (evaluation) build the same way."""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from src.launch.distributed import World

log = logging.getLogger(__name__)


def build_loaders(cfg: DictConfig, device: torch.device, world: World) -> Any:
    log.info("Instantiating data <%s>", cfg.data._target_)
    return instantiate(
        cfg.data, seed=cfg.seed, device=device, rank=world.rank, world_size=world.world_size
    )


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
    limit = cfg.runner.limit_train_batches
    batches = batches_per_epoch if limit < 0 else min(limit, batches_per_epoch)
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


def build_criterion(cfg: DictConfig) -> nn.Module:
    criterion: nn.Module = instantiate(cfg.criterion)
    return criterion
