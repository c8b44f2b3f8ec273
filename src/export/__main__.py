"""Export a checkpoint for inference, to be used without this repository's training code.

    python -m src.export run=outputs/<date>/<time>          # that run's best.pt
    python -m src.export ckpt=<file.pt> [out=<folder>] [onnx=false] [data.root=/elsewhere]
    make export RUN=<run dir>  |  make export CKPT=<file.pt>

Into `<run>/export/<checkpoint name>/` (`<name>.export/` beside a checkpoint outside a run), one
folder that appears whole or not at all and replaces only an older export of the same checkpoint:

    model.safetensors  the evaluation weights (the EMA average when the run kept one)
    model.json         the model's `_target_` and arguments, the data's facts (`data_info`: input
                       size, channels, mean and std, vocabulary, ...), the inputs, the checks made
    model.onnx         the same model through `torch.onnx.export(..., dynamo=True)`, with a dynamic
                       batch axis and, where the model allows it, a dynamic length axis

The model is rebuilt as `src.eval` rebuilds it (the project's own classes only), on the CPU, and
fed what the task gives it for the first test batch of the run's own data. The safetensors file
must read back exactly (src/export/weights.py), onnxruntime must match PyTorch within tolerance
(src/export/to_onnx.py). A model that cannot be exported to ONNX gets one line saying why and
exit code 2, and nothing is written (`onnx=false` exports the weights alone). Needs the `export`
extra: pip install -e ".[export]".
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import nn
from torch.utils import _pytree as pytree

from src import build
from src.common.args import key_values
from src.common.files import atomic_write_json
from src.eval import Trained, load_trained
from src.export.staging import ExportError, Staging
from src.export.to_onnx import ATOL, RTOL, write_onnx
from src.export.weights import check_weights, write_weights
from src.launch.cli import run_script
from src.launch.distributed import World
from src.task.base import Task
from src.training.checkpoint import CheckpointError, run_dir_of

USAGE = (
    "usage: python -m src.export ckpt=<file.pt> | run=<run dir> [out=<folder>] [onnx=false] "
    "[key=value ...]"
)
PACKAGES = ("safetensors", "onnx", "onnxscript", "onnxruntime")  # the `export` extra
ON_CPU = ["device=cpu", "runner.channels_last=false"]  # the reference onnxruntime is held to


def parse_args(argv: list[str]) -> tuple[Path, Path | None, bool, list[str]]:
    """`ckpt=` or `run=` picks the checkpoint, `out=` the folder, `onnx=false` skips ONNX;
    other key=value pairs override its config (e.g. data.root)."""
    pairs, unknown = key_values(argv)
    onnx = pairs.pop("onnx", "true").lower()
    if unknown or ("ckpt" in pairs) == ("run" in pairs) or onnx not in ("true", "false"):
        raise CheckpointError(USAGE)
    if "ckpt" in pairs:
        path = Path(pairs.pop("ckpt"))
    else:
        path = Path(pairs.pop("run")) / "checkpoints" / "best.pt"
    out = Path(pairs.pop("out")) if "out" in pairs else None
    return path, out, onnx == "true", [f"{k}={v}" for k, v in pairs.items()]


def require_packages() -> None:
    missing = [name for name in PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise ExportError(f"export needs {', '.join(missing)}: pip install -e \".[export]\"")


def export_folder(checkpoint: Path) -> Path:
    """One folder per checkpoint: exports of best.pt and last.pt never overwrite each other."""
    run = run_dir_of(checkpoint)
    if run is not None:
        return run / "export" / checkpoint.stem
    return checkpoint.resolve().parent / f"{checkpoint.stem}.export"


def model_inputs(task: Task, model: nn.Module, batch: Any) -> tuple[Any, ...]:
    """The model's positional inputs for `batch` (images, (values, mask), token ids, ...), caught
    on their way into its forward: only the task knows its batch layout."""
    seen: list[tuple[Any, ...]] = []
    handle = model.register_forward_pre_hook(lambda _, args: seen.append(args))
    try:
        with torch.no_grad():
            task.loss(model, batch)
    finally:
        handle.remove()
    if not seen:
        raise ExportError(f"{type(task).__name__}.loss never called the model")
    return seen[0]


def first_batch(trained: Trained) -> Any:
    loaders = build.build_loaders(trained.cfg, trained.device, World())
    for batch in loaders.test:
        return trained.task.to_device(batch, trained.device)
    raise ExportError("the run's test split has no batch to check the export on")


def model_config(trained: Trained) -> dict[str, Any]:
    """`_target_` and the constructor's arguments: `cls(**arguments)` rebuilds the model."""
    node: dict[str, Any] = OmegaConf.to_container(trained.cfg.model, resolve=True)  # type: ignore[assignment]
    return {k: v for k, v in node.items() if k == "_target_" or not k.startswith("_")}


def example_args(inputs: tuple[Any, ...]) -> str:
    """The arguments of the checked call as text, e.g. `(PaddedBatch(values=float32[500, 40, 1],
    mask=bool[500, 40]),)`: what `model(*args)` takes, whatever the ONNX names say."""
    leaves, tree = pytree.tree_flatten(inputs)
    shapes = [f"{str(t.dtype).removeprefix('torch.')}{list(t.shape)}" for t in leaves]
    return repr(tree.unflatten(shapes)).replace("'", "")


def describe(trained: Trained, path: Path, inputs: tuple[Any, ...]) -> dict[str, Any]:
    """model.json without its `onnx` part: how to rebuild the model and what to feed it."""
    averaged = bool(trained.payload.get("callbacks", {}).get("ema", {}).get("weights"))
    return {
        "model": model_config(trained),
        "data_info": trained.data_info,
        "weights": {
            "file": "model.safetensors",
            "checkpoint": str(path.resolve()),
            "step": trained.payload["state"]["step"],
            "averaged": averaged,  # the EMA weights, as validation and test used them
            "parameters": sum(p.numel() for p in trained.model.parameters()),
        },
        "example_args": example_args(inputs),
        "versions": {"torch": torch.__version__}
        | {name: importlib.metadata.version(name) for name in PACKAGES},
    }


def export(path: Path, out: Path | None, onnx: bool, overrides: list[str]) -> dict[str, Any]:
    """Write the export folder of checkpoint `path`; model.json's content."""
    require_packages()
    trained = load_trained(path, [*overrides, *ON_CPU])
    folder = out or export_folder(path)
    with Staging(folder) as staging:
        inputs = model_inputs(trained.task, trained.model, first_batch(trained))
        description = describe(trained, path, inputs)
        weights = write_weights(trained.model, staging)
        exact = check_weights(trained.model, description["model"], weights, inputs)
        description["weights"]["parity"] = {"max_abs_diff": exact, "exact": True}
        if onnx:
            try:
                description["onnx"] = write_onnx(trained.model, inputs, staging)
            except ExportError as err:
                note = "nothing written; onnx=false exports the weights alone"
                raise ExportError(f"{err} ({note})") from err
        atomic_write_json(staging / "model.json", description)
    description["folder"] = str(folder)
    return description


def main(argv: list[str]) -> dict[str, Any]:
    started = time.perf_counter()
    for name in ("onnxscript", "onnx_ir"):  # their optimiser's INFO lines say nothing to a user
        logging.getLogger(name).setLevel(logging.WARNING)
    description = export(*parse_args(argv))
    files = ", ".join(sorted(p.name for p in Path(description["folder"]).iterdir()))
    took = time.perf_counter() - started
    print(f"{files} -> {description['folder']} ({took:.1f} s)")
    print("model.safetensors reads back exactly (every tensor, and the outputs on a test batch)")
    if "onnx" in description:
        checked = description["onnx"]["parity"]
        print(
            f"model.onnx: onnxruntime matches PyTorch within {ATOL} + {RTOL} * |output| on "
            f"{checked['shapes_checked']} input shapes, max abs difference "
            f"{checked['max_abs_diff']:.1e}"
        )
    return description


if __name__ == "__main__":
    run_script(main, logging.WARNING)
