"""More than MNIST: FashionMNIST through torchvision's class, and padded variable-length data."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from helpers import tiny_overrides, write_mnist_like
from src.data.fashion_mnist import build_loaders as fashion_loaders
from src.data.sequences import SequenceCollate, make_sequences, pad_collate
from src.model.seq_pool import SeqPool


def test_fashion_mnist_reads_torchvision_layout(tmp_path: Path) -> None:
    raw = write_mnist_like(tmp_path, name="FashionMNIST", n_train=120, n_test=40)
    assert raw == tmp_path / "FashionMNIST" / "raw"
    loaders = fashion_loaders(
        str(tmp_path), batch_size=20, eval_batch_size=40, val_size=20, split_seed=0, download=False
    )
    x, y = next(iter(loaders.train))
    assert x.shape == (20, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert len(loaders.train) == 5 and len(loaders.test) == 1


def test_fashion_mnist_trains_through_the_cli(cli, tmp_path: Path) -> None:
    write_mnist_like(tmp_path / "data", name="FashionMNIST")
    run_dir = tmp_path / "run"
    args = tiny_overrides(tmp_path / "data", run_dir)
    result = cli(*args, "data=fashion_mnist", "runner.max_steps=12")
    assert result.returncode == 0, result.stderr
    results = json.loads((run_dir / "results.json").read_text())
    assert results["steps"] == 12 and results["test/acc"] > 0.5
    assert "src.data.fashion_mnist.build_loaders" in (run_dir / ".hydra/config.yaml").read_text()


def test_pad_collate_pads_with_zeros_and_masks_the_padding() -> None:
    sequences = [torch.ones(3, 2), 2 * torch.ones(1, 2), 3 * torch.ones(5, 2)]
    values, mask = pad_collate(sequences)
    assert values.shape == (3, 5, 2) and mask.shape == (3, 5) and mask.dtype == torch.bool
    assert mask.sum(1).tolist() == [3, 1, 5]
    assert mask.tolist()[0] == [True, True, True, False, False]
    for i, sequence in enumerate(sequences):
        n = len(sequence)
        assert torch.equal(values[i, :n], sequence)
        assert not values[i, n:].any()  # padding is zeros


def test_sequence_collate_gathers_by_id_and_model_ignores_padding() -> None:
    sequences, labels = make_sequences(10, 2, 9, 1, seed=0)
    (values, mask), targets = SequenceCollate(sequences)(torch.tensor([4, 7]), labels[[4, 7]])
    assert values.shape[1] == max(len(sequences[4]), len(sequences[7]))
    assert torch.equal(values[0, : len(sequences[4])], sequences[4])
    assert targets.tolist() == labels[[4, 7]].tolist()
    model = SeqPool().eval()
    alone = model((sequences[4].unsqueeze(0), torch.ones(1, len(sequences[4]), dtype=torch.bool)))
    assert torch.allclose(model((values, mask))[0], alone[0], atol=1e-6)


def test_sequence_task_trains_through_the_cli(cli, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = ["data=sequences", "model=seq_pool", "data.n_train=1024", "data.n_test=500"]
    result = cli(
        *args,
        "device=cpu",
        "runner.progress=log",
        "runner.max_epochs=3",
        "optimizer.lr=0.02",
        f"hydra.run.dir={run_dir}",
    )
    assert result.returncode == 0, result.stderr
    results = json.loads((run_dir / "results.json").read_text())
    assert results["test/acc"] > 0.85 and results["test/samples"] == 500
