"""Range checks that types alone cannot express, all reported together before any work starts.

Choices (device, precision, monitor_mode, ...) are Enums in the schemas: Hydra rejects a wrong
one while composing. What is left are bounds, and NaN, which passes every comparison.
"""

from __future__ import annotations

import math
from typing import Any

from src.common.errors import InvalidValue, UserError
from src.data.folds import check_folds

# key -> (smallest allowed value, whether the bound itself is allowed)
LOWER_BOUNDS = {
    "optimizer.lr": (0.0, False),
    "data.batch_size": (1, True),
    "data.eval_batch_size": (1, True),
    "data.val_size": (0, True),
    "data.test_size": (0, True),
    "data.loader.num_workers": (0, True),
    "data.decode_workers": (0, True),
    "data.loader.prefetch_factor": (1, True),
    "runner.max_epochs": (0, True),
    "runner.max_steps": (-1, True),
    "runner.log_every_n_steps": (1, True),
    "runner.checkpoint_every_n_steps": (0, True),
    "runner.keep_last_k": (0, True),
    "runner.overfit_batches": (0, True),
    "runner.accumulate_grad_batches": (1, True),
    "runner.gradient_clip_val": (0.0, True),
    "runner.early_stopping.patience": (0, True),
    "runner.early_stopping.min_delta": (0.0, True),
    "runner.ema.decay": (0.0, True),
    "runner.ema.warmup_steps": (0, True),
    "runner.ema.start_step": (0, True),
}
# key -> (largest allowed value, whether the bound itself is allowed)
UPPER_BOUNDS = {"runner.ema.decay": (1.0, False)}


class ConfigError(UserError, ValueError):
    """The composed config has values out of range; the message lists every problem."""


def _get(cfg: Any, dotted: str) -> Any:
    node = cfg
    for part in dotted.split("."):
        if node is None or part not in node:
            return None
        node = node[part]
    return node


def config_problems(cfg: Any) -> list[str]:
    problems = []
    for key, (low, inclusive) in LOWER_BOUNDS.items():
        value = _get(cfg, key)
        if value is None:
            continue
        if isinstance(value, float) and math.isnan(value):
            problems.append(f"{key} must be a number (got nan)")
        elif value < low or (value == low and not inclusive):
            relation = ">=" if inclusive else ">"
            problems.append(f"{key} must be {relation} {low} (got {value})")
    for key, (high, inclusive) in UPPER_BOUNDS.items():
        value = _get(cfg, key)
        if value is not None and (value > high or (value == high and not inclusive)):
            problems.append(f"{key} must be {'<=' if inclusive else '<'} {high} (got {value})")
    problems += _fold_problems(cfg)
    problems += _strategy_problems(cfg)
    monitor = str(_get(cfg, "runner.monitor"))
    if not monitor.startswith("val/"):
        problems.append(
            f"runner.monitor must be a validation metric like val/loss (got {monitor!r})"
        )
    return problems


def _fold_problems(cfg: Any) -> list[str]:
    """data.folds 0 or >= 2, data.fold one of them (the data checks the training set's size)."""
    folds, fold = _get(cfg, "data.folds"), _get(cfg, "data.fold")
    if not isinstance(folds, int) or not isinstance(fold, int):
        return []
    try:
        check_folds(folds, fold)
    except InvalidValue as err:
        return [str(err)]
    return []


def _strategy_problems(cfg: Any) -> list[str]:
    """What FSDP cannot combine with: each is a model copy or a scaler of its own."""
    if str(_get(cfg, "runner.strategy")) not in ("fsdp", "StrategyChoice.fsdp"):
        return []
    clashes = {
        "runner.ema.decay > 0 (the average would copy every shard's full parameters)": (
            (_get(cfg, "runner.ema.decay") or 0) > 0
        ),
        "runner.precision=fp16 (use bf16, or runner.fsdp.param_dtype)": (
            str(_get(cfg, "runner.precision")) in ("fp16", "Precision.fp16")
        ),
    }
    return [f"runner.strategy=fsdp does not combine with {k}" for k, v in clashes.items() if v]


def check_config(cfg: Any) -> None:
    problems = config_problems(cfg)
    if problems:
        raise ConfigError("invalid config: " + "; ".join(problems))
