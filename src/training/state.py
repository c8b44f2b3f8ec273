"""Progress counters and random-number state: everything, besides the objects' own
state_dicts, that a checkpoint needs for a resumed run to continue exactly."""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch


@dataclass
class TrainState:
    epoch: int = 0  # current epoch (0-based); equals epochs completed between epochs
    step: int = 0  # optimizer steps taken so far (the x axis of every metric)
    batch_in_epoch: int = 0  # batches of the current epoch already consumed
    samples_seen: int = 0  # training samples consumed, over all ranks
    best_metric: float | None = None  # best value of the monitored metric so far
    best_step: int = -1  # step at which best_metric was reached
    train_time_s: float = 0.0  # time spent in fit(), summed over resumed segments
    wall_time_s: float = 0.0  # process time up to the last checkpoint, summed over segments
    finished: bool = False  # fit() ran to its end (max_epochs, max_steps or a stop reason)
    stop_reason: str = ""  # why training ended before max_epochs/max_steps ("" = it did not)

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        unknown = set(state) - set(asdict(self))
        if unknown:
            raise KeyError(f"unknown training-state keys {sorted(unknown)}")
        for key, value in state.items():
            setattr(self, key, value)


class Stopwatch:
    """Seconds since `start` (a `time.perf_counter()` value), plus `carried`: the seconds of
    the earlier segments of a resumed run."""

    def __init__(self, carried: float = 0.0, start: float | None = None) -> None:
        self.carried = carried
        self.start = time.perf_counter() if start is None else start

    def elapsed(self) -> float:
        return self.carried + time.perf_counter() - self.start


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture_rng() -> dict[str, Any]:
    """Every generator a training step may draw from, in checkpoint-safe types."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    assert isinstance(keys, np.ndarray)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    random.setstate(_as_tuples(state["python"]))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuples(value: Any) -> Any:
    """random.setstate needs tuples; serialisers may hand back lists."""
    if isinstance(value, (list, tuple)):
        return tuple(_as_tuples(v) for v in value)
    return value


if __name__ == "__main__":
    seed_everything(0)
    saved = capture_rng()
    first = torch.rand(2)
    restore_rng(saved)
    print("rng restored exactly:", torch.equal(first, torch.rand(2)), TrainState())
