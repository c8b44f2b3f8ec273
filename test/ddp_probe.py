"""Test-only entry point: the real CLI (`src.main`), and every rank dumps its parameters.

`torchrun ... -m ddp_probe <overrides>` with PARAMS_DUMP_DIR set writes rank<r>.pt (the model's
state_dict at the end of `fit`, before `test` loads best.pt) so a test can check that all ranks
hold the same weights. Production code knows nothing about it.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from src.main import run
from src.runner import Runner

_fit = Runner.fit


def fit_and_dump(self: Runner, *args, **kwargs) -> None:
    _fit(self, *args, **kwargs)
    out = Path(os.environ["PARAMS_DUMP_DIR"])
    out.mkdir(parents=True, exist_ok=True)
    torch.save(self.plain_model.state_dict(), out / f"rank{self.world.rank}.pt")


if __name__ == "__main__":
    Runner.fit = fit_and_dump  # type: ignore[method-assign]
    run()
