"""make export: every shipped task's model to safetensors + model.json and to ONNX, read back
the way a user without this repository's training code would, on a real batch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import pytest
import torch
from safetensors.torch import load_model
from torch.utils import _pytree as pytree

from helpers import REPO, run_cli, tiny_overrides
from src.eval import load_trained
from src.export.__main__ import ON_CPU, first_batch, main, model_inputs
from src.export.to_onnx import ATOL, RTOL
from src.export.weights import rebuild

SEQUENCES = ["data=sequences", "data.n_train=100", "data.n_val=20", "data.n_test=30"]
TASKS = {  # every shipped model, under the task that trains it
    "cnn": ["model=cnn"],
    "mlp": ["model=mlp"],
    "autoencoder": ["task=reconstruction"],
    "seq_pool": [*SEQUENCES, "model=seq_pool", "data.batch_size=20", "data.eval_batch_size=30"],
    "char_transformer": [
        "task=language_model",
        "data.block_size=16",
        "data.batch_size=8",
        "data.eval_batch_size=16",
        "model.n_layer=1",
        "model.n_head=2",
        "model.n_embd=16",
    ],
}


def overrides(name: str, data_root: Path, run_dir: Path) -> list[str]:
    own_data = ["device=cpu", "runner.progress=log", f"hydra.run.dir={run_dir}", *TASKS[name]]
    if name == "seq_pool":  # data generated in memory: no files, none of their keys
        return own_data
    if name == "char_transformer":  # a text of its own: about 3k characters of Python
        corpus = run_dir.parent / "corpus.txt"
        corpus.write_text("".join(f"def f{i}(x):\n    return x * {i % 7}\n" for i in range(100)))
        return [*own_data, f"data.path={corpus}"]
    return [*tiny_overrides(data_root, run_dir), *TASKS[name]]


@pytest.fixture(scope="module")
def runs(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One tiny trained run per task (two optimizer steps)."""
    found = {}
    for name in TASKS:
        run_dir = tmp_path_factory.mktemp("export") / name
        result = run_cli(*overrides(name, data_root, run_dir), "runner.max_steps=2")
        assert result.returncode == 0, result.stderr[-2000:]
        found[name] = run_dir
    return found


@pytest.fixture(scope="module")
def exported(runs: dict[str, Path]) -> dict[str, dict[str, Any]]:
    return {name: main([f"run={run}"]) for name, run in runs.items()}


@pytest.mark.parametrize("name", list(TASKS))
def test_a_shipped_task_exports_and_reads_back(
    name: str, runs: dict[str, Path], exported: dict[str, dict[str, Any]]
) -> None:
    folder = runs[name] / "export" / "best"
    assert sorted(p.name for p in folder.iterdir()) == [
        "model.json",
        "model.onnx",
        "model.safetensors",
    ]
    assert not list(folder.parent.glob(".best.*.tmp"))
    config = json.loads((folder / "model.json").read_text())
    returned = {k: v for k, v in exported[name].items() if k != "folder"}
    assert config == json.loads(json.dumps(returned))

    # What a user does: the class from model.json, the weights from model.safetensors.
    model = rebuild(config["model"])
    load_model(model, folder / "model.safetensors")  # strict; ties shared weights again
    trained = load_trained(runs[name] / "checkpoints" / "best.pt", ON_CPU)
    reference = trained.model.state_dict()
    assert all(torch.equal(model.state_dict()[k], reference[k]) for k in reference)

    inputs = model_inputs(trained.task, trained.model, first_batch(trained))
    with torch.no_grad():
        expected = [t.numpy() for t in pytree.tree_leaves(trained.model(*inputs))]
        assert all(
            np.array_equal(a.numpy(), b)
            for a, b in zip(pytree.tree_leaves(model(*inputs)), expected)
        )
    session = onnxruntime.InferenceSession(str(folder / "model.onnx"))
    feed = {i.name: t.numpy() for i, t in zip(session.get_inputs(), pytree.tree_leaves(inputs))}
    for got, want in zip(session.run(None, feed), expected, strict=True):
        assert got.shape == want.shape
        assert np.all(np.abs(got - want) <= ATOL + RTOL * np.abs(want))
    assert config["weights"]["parity"] == {"max_abs_diff": 0.0, "exact": True}
    assert 0.0 <= config["onnx"]["parity"]["max_abs_diff"] <= ATOL


def test_a_model_that_cannot_be_exported_gets_one_line(runs: dict[str, Path]) -> None:
    path = {"PYTHONPATH": f"{REPO}:{REPO / 'test'}"}
    args = (f"run={runs['mlp']}", "out=elsewhere")
    result = run_cli(*args, module="export_probe", cwd=runs["mlp"], env=path)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: MLP cannot be exported to ONNX: ")
    assert "nothing written; onnx=false exports the weights alone" in lines[0]
    assert [p.name for p in runs["mlp"].iterdir() if "elsewhere" in p.name] == []


def test_onnx_false_exports_the_weights_alone(runs: dict[str, Path], tmp_path: Path) -> None:
    description = main(
        [f"ckpt={runs['cnn'] / 'checkpoints' / 'last.pt'}", f"out={tmp_path / 'w'}", "onnx=false"]
    )
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == ["model.json", "model.safetensors"]
    assert "onnx" not in description and description["weights"]["parity"]["exact"]
