"""What a checkpoint holds: a run's whole training state as one dict, and back.

    model, optimizer                         their state as the strategy keeps it (plain names)
    scheduler, scaler                        their own state_dicts
    state                                    progress counters and clocks (TrainState)
    window, window_losses                    the metric window since the last logging step
    rng                                      every generator a step may draw from
    callbacks                                each callback's state by name (EMA, early stopping)
    + checkpoint_extra                       e.g. the resolved config, the data's facts, the
                                             trackers' run ids

Restoring all of it is what makes a resumed run continue bit for bit.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import torch
from torch import nn

from src.training.callbacks import Callback
from src.training.precision import MixedPrecision
from src.training.state import TrainState, capture_rng, restore_rng
from src.training.strategy import Replicated

log = logging.getLogger(__name__)


class TrainingParts(Protocol):
    """The Runner's attributes a checkpoint is made of."""

    plain_model: nn.Module
    strategy: Replicated  # or Sharded: how the model's and optimizer's state are read and written
    optimizer: torch.optim.Optimizer
    scheduler: Any
    precision: MixedPrecision
    state: TrainState
    window: Any  # the task's metrics object (state_dict / load_state_dict)
    window_losses: list[torch.Tensor]
    callbacks: list[Callback]
    checkpoint_extra: dict[str, Any]


def capture(parts: TrainingParts) -> dict[str, Any]:
    model, optimizer = parts.strategy.state_dicts(parts.plain_model, parts.optimizer)
    return {
        "model": model,
        "optimizer": optimizer,
        "scheduler": parts.scheduler.state_dict() if parts.scheduler is not None else None,
        "scaler": parts.precision.state_dict(),
        "state": parts.state.state_dict(),
        "window": parts.window.state_dict(),
        "window_losses": [loss.cpu() for loss in parts.window_losses],
        "rng": capture_rng(),
        "callbacks": {c.name: c.state_dict() for c in parts.callbacks if c.name},
        **parts.checkpoint_extra,
    }


def restore(parts: TrainingParts, payload: dict[str, Any], source: str) -> None:
    """Everything back; an optimizer or scheduler state of None is left as built (a resume that
    changed them, src/training/resume.py)."""
    parts.strategy.load_state(parts.plain_model, parts.optimizer, payload, source)
    if parts.scheduler is not None and payload["scheduler"] is not None:
        parts.scheduler.load_state_dict(payload["scheduler"])
    parts.precision.load_state_dict(payload["scaler"])
    parts.state.load_state_dict(payload["state"])
    parts.window.load_state_dict(payload["window"])
    parts.window_losses = list(payload["window_losses"])
    restore_rng(payload["rng"])
    saved = payload.get("callbacks", {})
    for callback in parts.callbacks:
        if callback.name in saved:
            callback.load_state_dict(saved[callback.name])
        elif callback.name:
            log.warning("%s has no %s state: it starts afresh", source, callback.name)
