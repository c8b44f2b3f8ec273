"""Test-only entry point: `python -m src.export` with the MLP's forward made data-dependent
(`if output.sum() > 0`), which torch.export cannot trace: a model that cannot be exported to
ONNX. Production code knows nothing about it."""

from __future__ import annotations

import runpy

import torch

from src.model.mlp import MLP

_forward = MLP.forward


def branching_forward(self: MLP, x: torch.Tensor) -> torch.Tensor:
    out = _forward(self, x)
    return out if out.sum() > 0 else -out


MLP.forward = branching_forward  # type: ignore[method-assign]
runpy.run_module("src.export", run_name="__main__", alter_sys=True)
