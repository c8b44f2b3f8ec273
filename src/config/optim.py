"""Schemas of the optimizer and scheduler groups (`optimizer=adamw|sgd`,
`scheduler=onecycle|cosine`): each field's default and its one-line meaning. schema.py stores
them with the other groups."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class AdamWConfig:
    _target_: str = "torch.optim.AdamW"  # the optimizer class
    _partial_: bool = True  # main.py supplies the model's parameters
    lr: float = 1e-2  # peak learning rate (the schedule's maximum)
    betas: list[float] = field(default_factory=lambda: [0.7, 0.9])  # low beta1: fast one-cycle
    weight_decay: float = 0.0  # decoupled weight decay


@dataclass
class SGDConfig:
    _target_: str = "torch.optim.SGD"  # the optimizer class
    _partial_: bool = True
    lr: float = 0.05  # peak learning rate (the schedule's maximum)
    momentum: float = 0.9  # fraction of the last update carried into the next
    nesterov: bool = True  # Nesterov momentum (look ahead before the gradient)
    weight_decay: float = 0.0  # L2 penalty added to the gradient


@dataclass
class OneCycleConfig:
    _target_: str = "src.training.schedulers.one_cycle"  # the schedule factory
    _partial_: bool = True  # main.py supplies the optimizer and the number of steps
    pct_start: float = 0.25  # fraction of steps spent warming up to optimizer.lr
    div_factor: float = 25.0  # start lr = optimizer.lr / div_factor
    final_div_factor: float = 1e4  # final lr = start lr / final_div_factor


@dataclass
class CosineConfig:
    _target_: str = "src.training.schedulers.warmup_cosine"  # the schedule factory
    _partial_: bool = True
    warmup_steps: int = 0  # linear warm-up from 0 to optimizer.lr
    min_lr_ratio: float = 0.0  # final lr as a fraction of optimizer.lr
