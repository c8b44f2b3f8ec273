"""Test-only entry point: the real CLI (`src.main`), with two hooks set by the environment.

`torchrun ... -m ddp_probe <overrides>` with PARAMS_DUMP_DIR set writes rank<r>.pt (the model's
state_dict at the end of `fit`, before `test` loads best.pt) so a test can check that all ranks
hold the same weights. EVAL_DELAY_S=<seconds> makes every validation and test batch that slow
(like a slow disk), a wide window in which a test can land a signal. Production code knows
nothing about either.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from src.main import run
from src.runner import Runner

_fit, _evaluate = Runner.fit, Runner.evaluate


def fit_and_dump(self: Runner, *args, **kwargs) -> None:
    _fit(self, *args, **kwargs)
    out = Path(os.environ["PARAMS_DUMP_DIR"])
    out.mkdir(parents=True, exist_ok=True)
    torch.save(self.plain_model.state_dict(), out / f"rank{self.world.rank}.pt")


class SlowBatches:
    """The loader's batches, each after a pause."""

    def __init__(self, loader: Any, delay: float) -> None:
        self.loader, self.delay = loader, delay

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        for batch in self.loader:
            time.sleep(self.delay)
            yield batch


def slow_evaluate(self: Runner, loader: Any, *args: Any, **kwargs: Any) -> dict[str, float]:
    return _evaluate(self, SlowBatches(loader, float(os.environ["EVAL_DELAY_S"])), *args, **kwargs)


if __name__ == "__main__":
    if "PARAMS_DUMP_DIR" in os.environ:
        Runner.fit = fit_and_dump  # type: ignore[method-assign]
    if "EVAL_DELAY_S" in os.environ:
        Runner.evaluate = slow_evaluate  # type: ignore[method-assign]
    run()
