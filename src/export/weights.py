"""model.safetensors and the model config beside it: the weights with no pickle and no training
code, and what rebuilds the module they fit (`_target_(**arguments)`).

The round trip is checked the way a user will load the files: the class named in the config is
built from its arguments alone, `safetensors.torch.load_model` fills it (strictly), and every
tensor and the outputs on a real batch must equal the checkpoint's model's, bit for bit.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils import _pytree as pytree

from src.export.staging import ExportError

WEIGHTS = "model.safetensors"


def rebuild(config: dict[str, Any]) -> nn.Module:
    """The module model.json describes, with fresh weights: `_target_(**arguments)`."""
    module, _, name = str(config["_target_"]).rpartition(".")
    arguments = {k: v for k, v in config.items() if k != "_target_"}
    model: nn.Module = getattr(importlib.import_module(module), name)(**arguments)
    return model.eval()


def write_weights(model: nn.Module, folder: Path) -> Path:
    """model.safetensors; tied parameters are stored once (the file's metadata names each
    alias, and `safetensors.torch.load_model` ties them again)."""
    from safetensors.torch import save_model

    path = folder / WEIGHTS
    save_model(model, str(path), force_contiguous=True)
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o666 & ~umask)  # safetensors creates it 0600; give it the umask like our files
    return path


def check_weights(model: nn.Module, config: dict[str, Any], path: Path, inputs: Any) -> float:
    """Load `path` into a model rebuilt from `config`; ExportError unless every tensor and the
    outputs on `inputs` equal `model`'s exactly. Returns the largest difference: 0.0."""
    from safetensors.torch import load_model

    fresh = rebuild(config)
    missing, unexpected = load_model(fresh, str(path), strict=False)
    if missing or unexpected:
        raise ExportError(f"{WEIGHTS} does not fit {config['_target_']}: {missing or unexpected}")
    saved, loaded = model.state_dict(), fresh.state_dict()
    changed = [k for k in saved if not torch.equal(saved[k], loaded[k])]
    with torch.no_grad():
        pairs = zip(pytree.tree_leaves(model(*inputs)), pytree.tree_leaves(fresh(*inputs)))
    differ = [float((a.double() - b.double()).abs().max()) for a, b in pairs if not a.equal(b)]
    if changed or differ:
        raise ExportError(
            f"{WEIGHTS} read back differs from the checkpoint's model "
            f"({len(changed)} tensors differ, outputs by up to {max(differ, default=0.0):.3g})"
        )
    return 0.0


if __name__ == "__main__":
    import tempfile

    from src.model.mlp import MLP

    config = {"_target_": "src.model.mlp.MLP", "in_features": 8, "hidden": [16], "num_classes": 3}
    model = rebuild(config)
    with tempfile.TemporaryDirectory() as tmp:
        path = write_weights(model, Path(tmp))
        difference = check_weights(model, config, path, (torch.randn(4, 8),))
        print(f"{type(model).__name__} -> {path.name}: read back exactly ({difference})")
    assert isinstance(model, MLP)
