"""Range checks that types alone cannot express, all reported together before any work starts."""

from __future__ import annotations

from typing import Any

CHOICES = {
    "device": ("auto", "cpu", "cuda", "mps"),
    "runner.progress": ("auto", "bar", "log", "none"),
    "runner.monitor_mode": ("max", "min"),
    "runner.on_nonfinite": ("stop", "skip"),
    "runner.test_ckpt": ("best", "last"),
    "runner.precision": ("32", "bf16", "16-mixed"),
}
# key -> (smallest allowed value, whether the bound itself is allowed)
LOWER_BOUNDS = {
    "optimizer.lr": (0.0, False),
    "data.batch_size": (1, True),
    "data.eval_batch_size": (1, True),
    "data.val_size": (0, True),
    "runner.max_epochs": (0, True),
    "runner.max_steps": (-1, True),
    "runner.log_every_n_steps": (1, True),
    "runner.checkpoint_every_n_steps": (0, True),
    "runner.keep_last_k": (0, True),
    "runner.overfit_batches": (0, True),
    "runner.accumulate_grad_batches": (1, True),
    "runner.gradient_clip_val": (0.0, True),
}


class ConfigError(ValueError):
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
    for key, allowed in CHOICES.items():
        value = _get(cfg, key)
        if value is not None and str(value) not in allowed:
            problems.append(f"{key} must be one of {' | '.join(allowed)} (got {value!r})")
    for key, (low, inclusive) in LOWER_BOUNDS.items():
        value = _get(cfg, key)
        if value is not None and (value < low or (value == low and not inclusive)):
            relation = ">=" if inclusive else ">"
            problems.append(f"{key} must be {relation} {low} (got {value})")
    monitor = str(_get(cfg, "runner.monitor"))
    if not monitor.startswith("val/"):
        problems.append(
            f"runner.monitor must be a validation metric like val/acc (got {monitor!r})"
        )
    return problems


def check_config(cfg: Any) -> None:
    problems = config_problems(cfg)
    if problems:
        raise ConfigError("invalid config: " + "; ".join(problems))
