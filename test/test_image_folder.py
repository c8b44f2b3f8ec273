"""`data=image_folder` on tiny synthetic folders: layouts, the cache, bad input, seeded batches."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
from pathlib import Path

import forkserver
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

from helpers import REPO, run_cli, write_image_folder, write_mnist_like
from src.data import image_cache
from src.data.augment import AugmentOptions, BatchImages
from src.data.dataloader import OnDevice, SeededDataLoader
from src.data.export_mnist import export_mnist
from src.data.idx import DataError
from src.data.image_files import TEST, TRAIN, VAL, scan_folder
from src.data.image_folder import build_loaders, carve
from src.model.cnn import CNN
from src.predict import main as predict_main
from src.runner import Runner
from src.task.classification import Classification
from src.training.debug import RepeatBatches
from src.training.options import RunnerOptions


@pytest.fixture(scope="module")
def grey_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("grey") / "images", per_class=40)


def loaders(root: Path, cache: Path, **kwargs):
    args = {"batch_size": 8, "eval_batch_size": 10, "cache_dir": str(cache)}
    args["loader"] = {"num_workers": kwargs.pop("workers", 0)}
    args["decode_workers"] = kwargs.pop("decode_workers", 0)
    return build_loaders(str(root), **(args | kwargs))


def batches(loader, epoch: int = 0, start: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    loader.set_epoch(epoch, start)
    return list(loader)


def same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(
        torch.equal(x, y) for pa, pb in zip(a, b) for x, y in zip(pa, pb)
    )


# --------------------------------------------------------------------------------- layouts
def test_class_folders_get_seeded_val_and_test_carves(grey_folder: Path, tmp_path: Path) -> None:
    scan = scan_folder(grey_folder)
    assert scan.classes == ["class_0", "class_1", "class_2"] and len(scan.files) == 120
    usable = np.ones(120, dtype=bool)
    rows = carve(scan, usable, 0.25, 12, split_seed=0)  # a fraction and a count
    assert [len(rows[s]) for s in (TRAIN, VAL, TEST)] == [78, 30, 12]
    assert sorted(np.concatenate(list(rows.values())).tolist()) == list(range(120))
    again = carve(scan, usable, 0.25, 12, split_seed=0)
    other = carve(scan, usable, 0.25, 12, split_seed=1)
    assert all(np.array_equal(rows[s], again[s]) for s in rows)
    assert not np.array_equal(rows[VAL], other[VAL])
    with pytest.raises(DataError, match="leaves no training images"):
        carve(scan, usable, 0.5, 0.5, split_seed=0)

    data = loaders(grey_folder, tmp_path, val_size=0.25, test_size=12)
    assert data.info == {
        "num_classes": 3,
        "in_channels": 1,
        "image_size": 12,
        "in_features": 144,
        "mean": data.info["mean"],
        "std": data.info["std"],
        "classes": scan.classes,
    }
    assert len(data.train) == 78 // 8 and sum(len(y) for _, y in data.test) == 12
    x, y = next(iter(data.train))
    assert x.shape == (8, 1, 12, 12) and x.dtype == torch.float32 and y.dtype == torch.int64


def test_train_val_test_folders_are_kept_and_a_missing_one_is_carved(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "root" / "train", per_class=10, size=(16, 10), mode="RGB")
    write_image_folder(tmp_path / "root" / "test", per_class=2, size=(30, 30), seed=1)
    data = loaders(tmp_path / "root", tmp_path / "cache", val_size=6)
    scan = scan_folder(tmp_path / "root")
    assert scan.split_folders == (TRAIN, TEST)
    assert sum(len(y) for _, y in data.val) == 6 and sum(len(y) for _, y in data.test) == 6
    assert len(data.train) == 24 // 8
    x, _ = next(iter(data.test))  # grey test images in an RGB folder: converted and resized
    assert data.info["in_channels"] == 3 and data.info["image_size"] == 10
    assert x.shape == (6, 3, 10, 10) and len(data.info["mean"]) == 3


def test_folder_mistakes_are_one_line_naming_the_path(tmp_path: Path) -> None:
    cases = {}
    cases["missing"] = (tmp_path / "nowhere", "does not exist")
    (tmp_path / "empty").mkdir()
    cases["no images"] = (tmp_path / "empty", "holds no images")
    write_image_folder(tmp_path / "loose", classes=1, per_class=2)
    for image in (tmp_path / "loose" / "class_0").iterdir():
        image.rename(tmp_path / "loose" / image.name)
    (tmp_path / "loose" / "class_0").rmdir()
    cases["loose"] = (tmp_path / "loose", "holds 2 images but no class subfolders")
    write_image_folder(tmp_path / "split" / "train", classes=2, per_class=2)
    write_image_folder(tmp_path / "split" / "val", classes=3, per_class=1)
    cases["val class"] = (tmp_path / "split" / "val" / "class_2", "has no folder in")
    for name, (path, message) in cases.items():
        root = path.parent.parent if name == "val class" else path
        with pytest.raises(DataError) as caught:
            loaders(root, tmp_path / "cache")
        line = str(caught.value)
        assert message in line and str(path) in line and "\n" not in line, name
    assert not (tmp_path / "cache").exists()  # nothing decoded, nothing written


def bad_folders(root: Path) -> dict[str, tuple[Path, Path]]:
    """Five broken folders: name -> (data.root, the path the error must name)."""
    cases = {}
    corrupt = write_image_folder(root / "corrupt", classes=2, per_class=2)
    (corrupt / "class_1" / "0001.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    cases["corrupt file"] = (corrupt, corrupt / "class_1" / "0001.png")
    unreadable = write_image_folder(root / "unreadable", classes=2, per_class=2)
    victim = unreadable / "class_0" / "0000.png"
    if os.geteuid() == 0:  # root reads any file: a link to nowhere cannot be read either
        victim.unlink()
        victim.symlink_to(root / "gone.png")
    else:
        victim.chmod(0)
    cases["unreadable file"] = (unreadable, victim)
    empty_class = write_image_folder(root / "empty_class", classes=2, per_class=2)
    (empty_class / "class_2").mkdir()
    (empty_class / "class_2" / "notes.txt").write_text("no images here")
    cases["empty class folder"] = (empty_class, empty_class / "class_2")
    (root / "no_images" / "class_0").mkdir(parents=True)
    cases["root with no images"] = (root / "no_images", root / "no_images" / "class_0")
    cases["missing root"] = (root / "missing", root / "missing")
    return cases


def test_each_bad_folder_is_one_line_naming_the_path(tmp_path: Path) -> None:
    for name, (root, path) in bad_folders(tmp_path / "folders").items():
        with pytest.raises(DataError) as caught:
            loaders(root, tmp_path / "cache")
        line = str(caught.value)
        assert str(path) in line and "\n" not in line, f"{name}: {line}"
    cached = {p.name.split("-")[0] for p in (tmp_path / "cache").iterdir() if p.is_dir()}
    assert cached == {"corrupt"}  # only the folder that decoded has a cache


def test_bad_folders_exit_2_with_one_line_and_write_nothing_but_the_cache(tmp_path: Path) -> None:
    cases = bad_folders(tmp_path / "folders")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    procs = {}
    for name in ("corrupt file", "unreadable file"):  # after decoding, and while decoding
        run_dir = tmp_path / "runs" / name.replace(" ", "_")
        args = ["data=image_folder", f"data.root={cases[name][0]}", f"hydra.run.dir={run_dir}"]
        args += [f"data.cache_dir={tmp_path / 'cache'}", "device=cpu"]
        procs[name] = forkserver.start("src.main", args, tmp_path, env)
    before = {p: p.read_bytes() for p in (tmp_path / "folders").rglob("*.png") if p.is_file()}
    lines = {}
    for name, proc in procs.items():
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 2 and len(err.strip().splitlines()) == 1, f"{name}: {err}"
        lines[name] = err.strip()
        assert lines[name].startswith("error: ") and str(cases[name][1]) in lines[name], name
        run_dir = tmp_path / "runs" / name.replace(" ", "_")
        assert not run_dir.exists(), name  # a failed start is undone
    assert "set data.on_corrupt=skip" in lines["corrupt file"]
    assert before == {p: p.read_bytes() for p in before}  # the images are left alone
    cached = {p.name.split("-")[0] for p in (tmp_path / "cache").iterdir() if p.is_dir()}
    assert cached == {"corrupt"} and not list((tmp_path / "cache").glob(".*partial*"))


# ------------------------------------------------------------------------- cache and corrupt
def test_corrupt_files_are_refused_or_skipped_with_a_count(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = write_image_folder(tmp_path / "images", per_class=12)
    for name in ("0003.png", "0007.png"):
        (root / "class_2" / name).write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"class_2/0003.png is not a readable image .* 1 more"):
        loaders(root, tmp_path / "cache", val_size=4, test_size=4)
    with caplog.at_level(logging.WARNING):
        data = loaders(root, tmp_path / "cache", val_size=4, test_size=4, on_corrupt="skip")
    assert "skipping 2 corrupt image file(s)" in caplog.text
    assert len(data.train.dataset) == 36 - 2 - 8
    assert len(list((tmp_path / "cache").glob("images-*"))) == 1  # decoded once, then reused


def test_cache_is_reused_and_rebuilt_when_a_file_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = write_image_folder(tmp_path / "images", per_class=6)
    builds = []
    real_build = image_cache.build_cache
    monkeypatch.setattr(
        image_cache, "build_cache", lambda *a, **k: builds.append(1) or real_build(*a, **k)
    )
    rng = torch.get_rng_state()
    first = loaders(
        root, tmp_path / "cache", val_size=2, test_size=2, batch_size=4, decode_workers=1
    )
    assert torch.equal(torch.get_rng_state(), rng)  # building a cache moves no random numbers
    loaders(root, tmp_path / "cache", val_size=2, test_size=2, batch_size=4)
    assert len(builds) == 1
    Image.new("L", (12, 12), 255).save(root / "class_0" / "0000.png")  # new bytes, new mtime
    changed = loaders(root, tmp_path / "cache", val_size=2, test_size=2, batch_size=4)
    assert len(builds) == 2 and len(list((tmp_path / "cache").glob("images-*"))) == 2
    assert first.info["mean"] != changed.info["mean"]
    assert not list((tmp_path / "cache").glob(".*partial*"))


def _open_in_child(root: str, cache: str, out: str) -> None:
    scan = scan_folder(root)
    opened = image_cache.open_cache(scan, 1, 12, cache, workers=0, progress=False)
    Path(out).write_text(str(opened.folder))


def test_concurrent_processes_build_one_cache_and_share_it(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "images", per_class=30)
    context = multiprocessing.get_context("fork")
    calls = tmp_path / "builds"
    real_build = image_cache.build_cache

    def counted(*args, **kwargs):  # runs in the children (fork keeps the patch)
        with open(calls, "a") as handle:
            handle.write("built\n")
        real_build(*args, **kwargs)

    image_cache.build_cache = counted
    try:
        children = [
            context.Process(target=_open_in_child, args=(root, tmp_path / "c", tmp_path / str(i)))
            for i in range(3)
        ]
        for child in children:
            child.start()
        for child in children:
            child.join(60)
    finally:
        image_cache.build_cache = real_build
    assert all(child.exitcode == 0 for child in children)
    assert calls.read_text() == "built\n"
    assert len({(tmp_path / str(i)).read_text() for i in range(3)}) == 1


# ---------------------------------------------------------------------------- seeded batches
@pytest.mark.parametrize("mode", ["batched", "per_sample"])
def test_batches_resume_mid_epoch_and_shard_exactly(
    grey_folder: Path, tmp_path: Path, mode: str
) -> None:
    augment = {"mode": mode, "hflip": 0.5, "brightness": 0.3, "crop_scale": [0.5, 1.0]}
    data = loaders(grey_folder, tmp_path, augment=augment, seed=3, workers=2)
    full = batches(data.train, epoch=1)
    assert len(full) == len(data.train) == 96 // 8
    assert same(batches(data.train, epoch=1, start=5), full[5:])  # mid-epoch resume: same pixels
    assert same(batches(data.train, epoch=1), full)
    assert not torch.equal(batches(data.train, epoch=2)[0][0], full[0][0])  # a new epoch
    ranks = [
        loaders(grey_folder, tmp_path, augment=augment, seed=3, rank=r, world_size=2)
        for r in (0, 1)
    ]
    halves = [batches(r.train, epoch=1) for r in ranks]
    for step, (a, b) in enumerate(zip(*halves)):  # each rank holds its slice of the global batch
        assert torch.equal(torch.cat([a[1], b[1]]), full[step][1])
        torch.testing.assert_close(torch.cat([a[0], b[0]]), full[step][0])
    for split in ("val", "test"):  # evaluation: every sample on exactly one rank, no padding
        single = [y for _, y in getattr(data, split)]
        sharded = [y for r in ranks for _, y in getattr(r, split)]
        assert torch.equal(torch.cat(sharded), torch.cat(single))


def test_batches_finished_on_the_device_equal_those_finished_in_the_workers(
    grey_folder: Path, tmp_path: Path
) -> None:
    """The GPU path (copy uint8, then augment there) run on the CPU: the same pixels."""
    augment = {"hflip": 0.5, "contrast": 0.4}
    data = loaders(grey_folder, tmp_path, augment=augment, workers=1)
    finish = data.train.collate_fn.finish  # what the workers ran
    raw = SeededDataLoader(data.train.dataset, 8, shuffle=True, collate_fn=lambda b: b)
    on_device = OnDevice(raw, torch.device("cpu"), finish, keep_on_cpu=(2,))
    assert len(on_device) == len(data.train)
    assert same(batches(on_device, epoch=2, start=3), batches(data.train, epoch=2, start=3))


def test_batched_augmentation_does_what_its_options_say() -> None:
    images = torch.randint(0, 256, (4, 3, 6, 6), dtype=torch.uint8)
    keys = torch.tensor([[0, i] for i in range(4)])
    plain = BatchImages([0.5] * 3, [0.25] * 3)(images, torch.arange(4), keys)[0]
    torch.testing.assert_close(plain, (images.float() / 255 - 0.5) / 0.25)
    flip = AugmentOptions(crop_scale=[1.0, 1.0], crop_ratio=[1.0, 1.0], hflip=1.0)
    flipped = BatchImages([0.5] * 3, [0.25] * 3, flip)(images, torch.arange(4), keys)[0]
    torch.testing.assert_close(flipped, plain.flip(-1))
    whole = AugmentOptions(crop_scale=[1.0, 1.0], crop_ratio=[1.0, 1.0 + 1e-9], vflip=1.0)
    resampled = BatchImages([0.5] * 3, [0.25] * 3, whole)(images, torch.arange(4), keys)[0]
    torch.testing.assert_close(resampled, plain.flip(-2), atol=1e-4, rtol=0)  # grid_sample path
    bright = AugmentOptions(crop_scale=[1.0, 1.0], crop_ratio=[1.0, 1.0], brightness=0.5)
    changed = BatchImages([0.0] * 3, [1.0] * 3, bright)(images, torch.arange(4), keys)[0]
    ratio = changed.sum((1, 2, 3)) / (images.float() / 255).sum((1, 2, 3))
    assert ((ratio > 0.5) & (ratio < 1.5)).all() and ratio.std() > 0  # a factor per sample
    assert AugmentOptions(hflip=2.0, crop_scale=[0.9, 0.5]).problems() == [
        "data.augment.crop_scale must satisfy 0 < low <= high <= 1 (got [0.9, 0.5])",
        "data.augment.hflip is a probability in [0, 1] (got 2.0)",
    ]


def test_runner_trains_on_a_plain_dataloader_and_on_repeated_seeded_batches(
    grey_folder: Path, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    plain = DataLoader(TensorDataset(torch.randn(40, 1, 12, 12), torch.arange(40) % 3), 8)
    data = loaders(grey_folder, tmp_path)
    for train in (plain, RepeatBatches(data.train, 2), RepeatBatches(plain, 3)):
        model = CNN(in_channels=1, num_classes=3, image_size=12, kernel_sizes=[3, 3])
        runner = Runner(
            model,
            torch.optim.SGD(model.parameters(), lr=0.01),
            Classification(),
            torch.device("cpu"),
            options=RunnerOptions(max_epochs=2),
        )
        runner.fit(train, data.val)
        assert runner.state.step == 2 * len(train) and runner.state.epoch == 2


# ------------------------------------------------------------------------ the command line
def test_rgb_folder_of_another_size_trains_with_only_its_root(tmp_path: Path) -> None:
    root = write_image_folder(
        tmp_path / "photos", per_class=120, size=(20, 24), mode="RGB", suffix=".jpg"
    )
    run_dir = tmp_path / "run"
    result = run_cli(
        "data=image_folder",
        f"data.root={root}",
        f"hydra.run.dir={run_dir}",
        "device=cpu",
        "runner.progress=log",
        cwd=tmp_path,
        env={"OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["test/samples"] == 36 and results["steps"] == 2  # 288 // 256 batches x 2
    assert list((tmp_path / "data" / "cache").glob("photos-20px-3ch-*"))  # cwd's data/cache
    ckpt = run_dir / "checkpoints" / "best.pt"
    info = torch.load(ckpt, weights_only=False)["data_info"]
    assert (info["in_channels"], info["image_size"], info["num_classes"]) == (3, 20, 3)
    rows = predict_main([f"ckpt={ckpt}", f"input={root / 'class_1'}", f"out={tmp_path / 'p.csv'}"])
    assert len(rows) == 120 and {"class", "probability"} <= set(rows[0])


def test_export_mnist_writes_png_class_folders(tmp_path: Path) -> None:
    write_mnist_like(tmp_path / "data", n_train=200, n_test=50)
    out = tmp_path / "data" / "mnist_png"
    with pytest.raises(DataError, match="fails its md5 check"):  # synthetic bytes, official md5
        export_mnist(out, tmp_path / "data", download=False)
    assert not out.exists() and not list((tmp_path / "data").glob(".mnist_png*"))
    export_mnist(out, tmp_path / "data", download=False, verify_md5=False)
    scan = scan_folder(out)
    assert scan.split_folders == (TRAIN, TEST) and len(scan.files) == 250
    assert scan.classes == [str(digit) for digit in range(10)]
    first = Image.open(scan.files[0])
    assert first.size == (28, 28) and first.mode == "L"
    with pytest.raises(DataError, match="already exists"):
        export_mnist(out, tmp_path / "data", download=False, verify_md5=False)
