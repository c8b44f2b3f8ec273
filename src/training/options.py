"""How the loop runs: the Runner's options, with their defaults and meanings, in one place.

The `runner` config schema (src/config/schema.py) extends this dataclass, so a value defined
here is the default of `runner.<key>` on the command line too. Choices are Enums: Hydra rejects
anything else while composing the config, with the list of valid values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class Mode(str, Enum):
    max = "max"  # a larger monitored value is better (accuracy)
    min = "min"  # a smaller one is better (loss)


class NonFinite(str, Enum):
    stop = "stop"  # stop with exit code 3, keeping the last good checkpoint
    skip = "skip"  # drop the batch and carry on (checks every step: one host sync per step)


class TestWeights(str, Enum):
    best = "best"  # the weights of best.pt (when it exists)
    last = "last"  # the weights at the end of training


class Precision(str, Enum):
    fp32 = "fp32"  # plain float32
    bf16 = "bf16"  # autocast to bfloat16 (float32's range: no loss scaling needed)
    fp16 = "fp16"  # autocast to float16, with loss scaling so small gradients survive


class StrategyChoice(str, Enum):
    ddp = "ddp"  # every rank holds the whole model (one process: no wrapper at all)
    fsdp = "fsdp"  # FSDP2: parameters, gradients and optimizer state sharded across ranks


@dataclass
class FSDPOptions:
    """`runner.fsdp`: what FSDP shards and how (docs/distributed.md)."""

    shard_modules: list[str] = field(default_factory=lambda: ["Block"])  # repeated block classes
    param_dtype: Precision = Precision.fp32  # gathered parameters' dtype (bf16: half the traffic)
    reduce_dtype: Precision = Precision.fp32  # gradients' dtype in the reduce-scatter
    reshard_after_forward: bool = True  # free a gathered block after forward (regather for bwd)
    cpu_offload: bool = False  # shards, gradients and optimizer state in CPU memory (CUDA)
    async_save: bool = False  # write checkpoints in the background while training goes on


@dataclass
class RunnerOptions:
    max_epochs: int = 2  # stop after this many epochs
    max_steps: int = -1  # stop after this many optimizer steps (-1 = unlimited)
    log_every_n_steps: int = 50  # metrics rows, log lines and bar numbers every n steps
    checkpoint_every_n_steps: int = 0  # also write last.pt every n steps (0 = epoch ends only)
    monitor: str = "val/loss"  # the validation metric that selects best.pt; sweeps optimise it
    monitor_mode: Mode = Mode.min  # whether a larger or a smaller monitored value is better
    on_nonfinite: NonFinite = NonFinite.stop  # what a NaN or infinite training loss does
    test_ckpt: TestWeights = TestWeights.best  # the weights the final test uses
    limit_train_batches: int = -1  # batches per training epoch (-1 = all)
    limit_val_batches: int = -1  # batches per validation pass (-1 = all)
    limit_test_batches: int = -1  # batches of the final test (-1 = all)
    precision: Precision = Precision.fp32  # arithmetic of the forward pass and the loss
    accumulate_grad_batches: int = 1  # batches whose gradients add up to one optimizer step
    gradient_clip_val: float = 0.0  # clip the global gradient norm to this (0 = off)


def better(value: float, best: float | None, mode: Mode | str, min_delta: float = 0.0) -> bool:
    """Whether `value` beats `best` (None: nothing yet) by more than `min_delta` in `mode`."""
    if best is None:
        return True
    return value > best + min_delta if mode == Mode.max else value < best - min_delta


def epoch_length(batches: int, limit: int) -> int:
    """Batches a training epoch takes: all of them, or `limit` when it is set (>= 0)."""
    return batches if limit < 0 else min(limit, batches)
