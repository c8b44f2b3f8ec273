"""model.onnx through `torch.onnx.export(..., dynamo=True)`, checked with onnxruntime.

The model is traced with `torch.export` once, with axis 0 of every input as a dynamic batch and
axis 1 of every input of two or more axes as a dynamic length; the exporter's own suggested
fixes narrow that down (an image's channels and side fixed, a length no longer than a context).
onnxruntime must then reproduce PyTorch's outputs on the real batch and on a smaller one (every
dynamic axis halved) within |onnx - torch| <= ATOL + RTOL * |torch|.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils import _pytree as pytree

from src.common.errors import first_line
from src.export.staging import ExportError

ATOL, RTOL = 1e-4, 1e-4  # float32 kernels that sum in another order differ by ~1e-7 relative
REFINEMENTS = 3  # rounds of the exporter's own suggested fixes to the dynamic axes
ONNX = "model.onnx"

Axes = dict[int, Any]  # axis -> torch.export.Dim (dynamic) or int (fixed), for one input tensor


def trace(model: nn.Module, inputs: tuple[Any, ...]) -> tuple[Any, list[Axes]]:
    """The exported program and each input tensor's axes (see the module docstring)."""
    batch, length = torch.export.Dim("batch"), torch.export.Dim("length")
    leaves, tree = pytree.tree_flatten(inputs)
    axes: list[Axes] = [{0: batch, **({1: length} if t.ndim > 1 else {})} for t in leaves]
    spec = tree.unflatten(axes)
    for _ in range(REFINEMENTS):
        try:
            return torch.export.export(model, inputs, dynamic_shapes=spec), tree.flatten_up_to(spec)
        except torch._dynamo.exc.UserError as err:
            if "Suggested fixes:" not in err.msg:
                raise
            refine = torch.export.dynamic_shapes.refine_dynamic_shapes_from_suggested_fixes
            spec = refine(err.msg, spec)
    return torch.export.export(model, inputs, dynamic_shapes=spec), tree.flatten_up_to(spec)


def halved(inputs: tuple[Any, ...], axes: list[Axes]) -> tuple[Any, ...]:
    """The same inputs with every dynamic axis cut to half its size: a second shape to check."""
    leaves, tree = pytree.tree_flatten(inputs)
    cut = []
    for tensor, dims in zip(leaves, axes):
        index = [slice(None)] * tensor.ndim
        for axis, dim in dims.items():
            if not isinstance(dim, int):
                index[axis] = slice(0, max(1, tensor.shape[axis] // 2))
        cut.append(tensor[tuple(index)])
    return tree.unflatten(cut)


def parity(session: Any, model: nn.Module, inputs: tuple[Any, ...]) -> float:
    """Run both; the largest absolute difference, or ExportError beyond the tolerance."""
    feed = {i.name: t.numpy() for i, t in zip(session.get_inputs(), pytree.tree_leaves(inputs))}
    got = session.run(None, feed)
    with torch.no_grad():
        expected = [t.numpy() for t in pytree.tree_leaves(model(*inputs))]
    worst = 0.0
    for onnx_out, torch_out in zip(got, expected, strict=True):
        if onnx_out.shape != torch_out.shape:
            raise ExportError(
                f"onnxruntime gives shape {onnx_out.shape}, PyTorch {torch_out.shape}"
            )
        difference = np.abs(onnx_out.astype(np.float64) - torch_out.astype(np.float64))
        worst = max(worst, float(difference.max(initial=0.0)))
        if not np.all(difference <= ATOL + RTOL * np.abs(torch_out)):
            raise ExportError(
                f"onnxruntime's outputs differ from PyTorch's by up to {worst:.3g} on a real batch "
                f"(tolerance {ATOL} + {RTOL} * |output|)"
            )
    return worst


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Keep torch.export's partial graphs, guard warnings and axis-naming notes off the terminal:
    a failure is reported as one line (ExportError), a success needs no commentary."""
    torch_log = logging.getLogger("torch")
    level = torch_log.level
    torch_log.setLevel(logging.CRITICAL)
    try:
        with contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        torch_log.setLevel(level)


def translate(model: nn.Module, inputs: tuple[Any, ...], path: Path) -> list[Axes]:
    """Write model.onnx; ExportError, naming the model and the first line of the cause, when
    torch.export cannot follow it or an op has no ONNX translation."""
    name = type(model).__name__
    try:
        with quiet():
            program, axes = trace(model, inputs)
    except Exception as err:  # data-dependent control flow, an op torch.export cannot follow
        raise ExportError(f"{name} cannot be exported to ONNX: {first_line(err)}") from err
    try:
        spec = pytree.tree_structure(inputs).unflatten(axes)
        with quiet():
            exported = torch.onnx.export(
                program, inputs, dynamic_shapes=spec, dynamo=True, verbose=False
            )
            exported.save(str(path))  # type: ignore[union-attr]
    except Exception as err:
        raise ExportError(f"{name} has no ONNX translation: {first_line(err)}") from err
    return axes


def write_onnx(model: nn.Module, inputs: tuple[Any, ...], folder: Path) -> dict[str, Any]:
    """model.onnx, checked with onnxruntime on the real batch and a halved one; what model.json
    says about it (inputs, outputs, opset, the parity found)."""
    import onnx
    import onnxruntime

    path = folder / ONNX
    axes = translate(model, inputs, path)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = max(parity(session, model, shape) for shape in (inputs, halved(inputs, axes)))
    leaves = pytree.tree_leaves(inputs)
    return {
        "file": path.name,
        "opset": next(o.version for o in onnx.load(str(path)).opset_import if o.domain == ""),
        "inputs": [
            {"name": i.name, "shape": i.shape, "dtype": str(t.dtype).removeprefix("torch.")}
            for i, t in zip(session.get_inputs(), leaves)
        ],
        "outputs": [{"name": o.name, "shape": o.shape} for o in session.get_outputs()],
        "parity": {"max_abs_diff": worst, "atol": ATOL, "rtol": RTOL, "shapes_checked": 2},
    }


if __name__ == "__main__":
    import tempfile

    from src.model.mlp import MLP

    with tempfile.TemporaryDirectory() as tmp:
        found = write_onnx(MLP(8, [16], 3).eval(), (torch.randn(4, 8),), Path(tmp))
        print(f"inputs {found['inputs']}, max abs difference {found['parity']['max_abs_diff']}")
