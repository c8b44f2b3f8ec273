"""K-fold cross-validation: the folds split the training set, and a K-fold sweep's summary
reports each setting's mean and standard deviation over its folds."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import numpy as np
import pytest
import yaml
from omegaconf import OmegaConf

from helpers import run_cli, sweep_overrides, write_image_folder
from src.common.errors import InvalidValue
from src.config.validate import config_problems
from src.data.folds import carve_validation
from src.data.idx import DataError
from src.data.image_files import TEST, scan_folder
from src.data.image_folder import build_loaders as image_loaders
from src.data.image_folder import carve, carve_fold
from src.data.mnist import build_loaders


@pytest.mark.parametrize(("n", "folds"), [(600, 3), (103, 5), (7, 7)])
def test_folds_are_disjoint_and_cover_the_training_set(n: int, folds: int) -> None:
    vals = []
    for fold in range(folds):
        train, val = carve_validation(n, val_size=0, seed=3, folds=folds, fold=fold)
        assert sorted([*train.tolist(), *val.tolist()]) == list(range(n))
        vals.append(set(val.tolist()))
    assert sum(len(v) for v in vals) == n and set().union(*vals) == set(range(n))
    assert max(map(len, vals)) - min(map(len, vals)) <= 1
    again = carve_validation(n, val_size=0, seed=3, folds=folds, fold=1)[1].tolist()
    assert set(again) == vals[1]  # a pure function of (n, seed, folds, fold)


def test_without_folds_the_validation_carve_is_unchanged() -> None:
    import torch

    order = torch.randperm(50, generator=torch.Generator().manual_seed(4))
    train, val = carve_validation(50, val_size=10, seed=4)
    assert val.tolist() == order[:10].tolist() and train.tolist() == order[10:].tolist()


def test_the_loaders_validate_on_one_fold(data_root: Path) -> None:
    common = {"batch_size": 50, "eval_batch_size": 100, "val_size": 100, "split_seed": 0}
    common |= {"download": False, "verify_md5": False}
    sizes = []
    for fold in range(3):
        loaders = build_loaders(str(data_root), **common, folds=3, fold=fold)
        sizes.append((len(loaders.train.inputs), len(loaders.val.inputs)))
    assert sizes == [(400, 200)] * 3  # 600 training images; val_size is unused


def test_bad_fold_settings_are_reported_before_any_work() -> None:
    cfg = OmegaConf.create({"data": {"folds": 1, "fold": 0}, "runner": {"monitor": "val/acc"}})
    assert config_problems(cfg) == ["data.folds=1 must be 0 (no folds) or at least 2"]
    cfg.data.folds, cfg.data.fold = 3, 3
    assert config_problems(cfg) == ["data.fold=3 must be in [0, 3) for data.folds=3"]
    with pytest.raises(InvalidValue, match="at most the 4 training rows"):
        carve_validation(4, val_size=0, seed=0, folds=5, fold=0)


def test_a_kfold_sweep_crossed_with_a_grid_reports_mean_and_std_over_folds(
    data_root: Path, tmp_path: Path
) -> None:
    sweep_dir = tmp_path / "sweep"
    swept = ("data.folds=3", "data.fold=0,1,2", "optimizer.lr=0.003,0.01", "runner.max_steps=2")
    result = run_cli("--multirun", "sweep=kfold", *sweep_overrides(data_root, sweep_dir, *swept))
    assert result.returncode == 0, result.stderr[-2000:]

    by_hand: dict[str, dict[str, list[float]]] = {}
    for trial in sorted(p for p in sweep_dir.iterdir() if p.name.isdigit()):
        overrides = dict(
            o.split("=", 1)
            for o in yaml.safe_load((trial / ".hydra" / "overrides.yaml").read_text())
        )
        results = json.loads((trial / "results.json").read_text())
        setting = by_hand.setdefault(overrides["optimizer.lr"], {})
        for key in ("best/val/acc", "test/acc", "test/loss"):
            setting.setdefault(key, []).append(results[key])
    assert sorted(by_hand) == ["0.003", "0.01"]

    with open(sweep_dir / "summary_groups.csv", newline="") as handle:
        rows = {row["optimizer.lr"]: row for row in csv.DictReader(handle)}
    for lr, metrics in by_hand.items():
        assert rows[lr]["n"] == "3" and rows[lr]["failed"] == "0"
        for key, values in metrics.items():
            assert float(rows[lr][f"{key}_mean"]) == pytest.approx(sum(values) / 3, abs=1e-12)
            deviations = sum((v - sum(values) / 3) ** 2 for v in values)
            std = (deviations / 2) ** 0.5  # the sample standard deviation over the 3 folds
            assert float(rows[lr][f"{key}_std"]) == pytest.approx(std, abs=1e-12)
    text = (sweep_dir / "summary.md").read_text()
    assert "## Grouped over folds (mean ± std, n = completed trials)" in text
    best = max(by_hand, key=lambda lr: statistics.fmean(by_hand[lr]["best/val/acc"]))
    assert f"**Best setting over folds:** `optimizer.lr={best}`" in text


def test_an_image_folder_cross_validates_over_its_carves_and_keeps_its_test_set(
    tmp_path: Path,
) -> None:
    root = write_image_folder(tmp_path / "images", per_class=10)  # 30 images, 3 classes
    scan, usable = scan_folder(root), np.ones(30, dtype=bool)
    plain = carve(scan, usable, 6, 6, split_seed=0)
    vals = []
    for fold in range(4):
        train, val = carve_fold(scan, plain, 4, fold, split_seed=0)
        assert sorted([*train, *val, *plain[TEST]]) == list(range(30))
        vals.append(set(val.tolist()))
    assert set().union(*vals) == set(range(30)) - set(plain[TEST]) and sum(map(len, vals)) == 24

    data = image_loaders(
        str(root),
        4,
        10,
        val_size=6,
        test_size=6,
        folds=4,
        fold=1,
        cache_dir=str(tmp_path / "cache"),
    )
    assert sum(len(y) for _, y in data.val) == 6 and sum(len(y) for _, y in data.test) == 6
    write_image_folder(tmp_path / "split" / "train", per_class=4)
    write_image_folder(tmp_path / "split" / "val", per_class=2)
    with pytest.raises(DataError, match="needs validation carved from train"):
        image_loaders(str(tmp_path / "split"), 4, 10, folds=3, cache_dir=str(tmp_path / "c2"))
