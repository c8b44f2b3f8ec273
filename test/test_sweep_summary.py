"""The sweep summary on hand-made trial folders, the trial identity, and the sweep configs."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.types import RunMode
from omegaconf import OmegaConf

from src.config.schema import register_configs
from src.reporting.records import code_version
from src.sweep import summary
from src.sweep.plot import log_scaled
from src.sweep.summary import write_summary
from src.sweep.trial import finished_results, trial_identity

CONFIG_DIR = Path(__file__).resolve().parents[1] / "src" / "config"
# best/val/acc of each (lr, seed) trial: three seeds per learning rate
SCORES = {("0.01", "0"): 0.91, ("0.01", "1"): 0.95, ("0.01", "2"): 0.96, ("0.1", "0"): 0.80}
SCORES |= {("0.1", "1"): 0.86, ("0.1", "2"): 0.83}


def fake_trial(folder: Path, overrides: list[str], results: dict, val_acc: list[float]) -> None:
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (folder / ".hydra" / "config.yaml").write_text(
        "runner:\n  monitor: val/acc\n  monitor_mode: max\n"
    )
    (folder / "results.json").write_text(json.dumps(results))
    rows = ["step,epoch,split,loss,acc,lr,samples_per_s,time_s"]
    rows += [f"{10 * (i + 1)},{i},val,0.5,{acc},,," for i, acc in enumerate(val_acc)]
    (folder / "metrics.csv").write_text("\n".join(rows) + "\n")


@pytest.fixture
def seeded_sweep(tmp_path: Path) -> Path:
    for job, ((lr, seed), score) in enumerate(SCORES.items()):
        results = {"status": "completed", "best/val/acc": score, "test/acc": score - 0.01}
        results |= {"test/loss": 1 - score, "epochs": 2, "wall_time_s": 3.0}
        fake_trial(tmp_path / str(job), [f"optimizer.lr={lr}", f"seed={seed}"], results, [score])
    failed = {"status": "failed", "error": "RuntimeError: boom"}
    fake_trial(tmp_path / "6", ["optimizer.lr=1.0", "seed=0"], failed, [])
    return tmp_path


def by_hand(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def test_grouping_over_seeds_gives_mean_and_sample_std(seeded_sweep: Path) -> None:
    write_summary(seeded_sweep)
    with open(seeded_sweep / "summary_groups.csv") as handle:
        groups = {row["optimizer.lr"]: row for row in csv.DictReader(handle)}
    assert list(groups) == ["0.01", "0.1", "1.0"]  # best mean first, the failed setting last
    for lr in ("0.01", "0.1"):
        mean, std = by_hand([s for (lr2, _), s in SCORES.items() if lr2 == lr])
        assert float(groups[lr]["best/val/acc_mean"]) == pytest.approx(mean)
        assert float(groups[lr]["best/val/acc_std"]) == pytest.approx(std)
        assert groups[lr]["n"] == "3" and groups[lr]["failed"] == "0"
    assert groups["1.0"]["n"] == "0" and groups["1.0"]["failed"] == "1"
    mean, std = by_hand([0.91, 0.95, 0.96])
    text = (seeded_sweep / "summary.md").read_text()
    assert f"| 0.01 | 3 | 0 | {mean:.4f} ± {std:.4f} |" in text
    assert "**Best setting over seeds:** `optimizer.lr=0.01`" in text


def test_trials_are_ranked_and_failures_listed_last(seeded_sweep: Path) -> None:
    write_summary(seeded_sweep)
    with open(seeded_sweep / "summary.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["trial"] for r in rows] == ["2", "1", "0", "4", "5", "3", "6"]
    assert rows[0]["final/val/acc"] == "0.96" and rows[-1]["status"] == "failed"
    text = (seeded_sweep / "summary.md").read_text()
    assert (
        "**Best trial: 2** (`optimizer.lr=0.01`, `seed=2`), best/val/acc 0.9600, 0.0100 ahead"
        in text
    )
    assert "- trial 6 (failed): RuntimeError: boom" in text


def test_no_grouped_table_without_repeated_seeds(tmp_path: Path) -> None:
    for job, lr in enumerate(("0.01", "0.1")):
        results = {"status": "completed", "best/val/acc": 0.9 - job / 10}
        fake_trial(tmp_path / str(job), [f"optimizer.lr={lr}", "seed=0"], results, [0.5])
    names = {p.name for p in write_summary(tmp_path)}
    assert names == {"summary.csv", "summary.md", "summary.png"}
    assert "Grouped over seeds" not in (tmp_path / "summary.md").read_text()


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([0.001, 0.01, 0.1], True),
        ([64, 128, 256, 512], True),
        ([0.1, 0.2, 0.3], False),
        ([0.003, 0.01], True),
        ([128, 256], False),
        ([0.0, 0.5, 1.0], False),
    ],
)
def test_log_axis_for_geometrically_spaced_values(values: list[float], expected: bool) -> None:
    assert log_scaled(values) is expected


def test_a_trial_counts_as_finished_only_with_the_same_overrides_and_config(tmp_path: Path) -> None:
    cfg = OmegaConf.create({"optimizer": {"lr": 0.01}, "seed": 0})
    identity = trial_identity(cfg, ["optimizer.lr=0.01"])
    (tmp_path / "results.json").write_text(json.dumps({"status": "completed", **identity}))
    assert finished_results(tmp_path, identity) is not None
    assert finished_results(tmp_path, trial_identity(cfg, ["optimizer.lr=0.1"])) is None
    cfg.seed = 1  # same overrides, but a yaml default changed in between
    assert finished_results(tmp_path, trial_identity(cfg, ["optimizer.lr=0.01"])) is None
    (tmp_path / "results.json").write_text(json.dumps({"status": "failed", **identity}))
    assert finished_results(tmp_path, identity) is None


def test_a_trial_run_by_other_code_counts_as_not_finished(tmp_path: Path) -> None:
    cfg = OmegaConf.create({"optimizer": {"lr": 0.01}, "seed": 0})
    identity = trial_identity(cfg, ["optimizer.lr=0.01"])
    assert identity["code"] == code_version() and "-" in identity["code"]
    edited = {**identity, "code": "0123456789ab-0123456789ab"}  # e.g. the model was edited since
    (tmp_path / "results.json").write_text(json.dumps({"status": "completed", **edited}))
    assert finished_results(tmp_path, identity) is None


def test_summary_png_is_replaced_whole_or_not_at_all(
    seeded_sweep: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_summary(seeded_sweep)
    before = (seeded_sweep / "summary.png").read_bytes()

    def half_written(trials, keys, out_png: Path) -> Path:
        out_png.write_bytes(before[:100])
        raise OSError("No space left on device")

    monkeypatch.setattr("src.sweep.plot.plot_summary", half_written)
    with pytest.raises(OSError):
        write_summary(seeded_sweep)
    assert (seeded_sweep / "summary.png").read_bytes() == before
    assert not [p.name for p in seeded_sweep.iterdir() if p.name.startswith(".")]
    line = summary.incomplete(summary.collect(seeded_sweep))
    assert line == "1 of 7 trials did not complete: 6 (failed)"


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONFIG_DIR / "sweep").glob("*.yaml")))
def test_every_sweep_config_composes_into_a_multirun(name: str) -> None:
    register_configs()
    with initialize_config_module("src.config", version_base="1.3"):
        cfg = compose("config", overrides=[f"sweep={name}"], return_hydra_config=True)
    assert cfg.hydra.mode == RunMode.MULTIRUN and cfg.hydra.sweeper.params
    assert "sweep" not in cfg  # the options set keys of the root config, not a `sweep` node
    if name == "optuna":
        assert cfg.hydra.sweeper.direction is None  # runner.monitor_mode's way
        assert cfg.hydra.sweeper._target_.endswith(".OptunaStudySweeper")


def test_seeds_are_averaged_in_the_plot_not_drawn_as_an_axis(seeded_sweep: Path) -> None:
    from src.sweep.collect import collect
    from src.sweep.plot import _mean_over_seeds, panel_keys
    from src.sweep.table import swept_keys

    trials = [t for t in collect(seeded_sweep) if t.score is not None]
    keys = panel_keys(swept_keys(trials))
    assert keys == ["optimizer.lr"]
    points = {s[0]["optimizer.lr"]: s[1:] for s in _mean_over_seeds(trials, keys)}
    for lr in ("0.01", "0.1"):
        mean, std = by_hand([s for (lr2, _), s in SCORES.items() if lr2 == lr])
        assert points[lr] == pytest.approx((mean, std))


def test_a_metric_of_ones_own_reaches_every_summary_table(tmp_path: Path) -> None:
    for job, (lr, iou) in enumerate([("0.01", 0.7), ("0.1", 2.5e-5)]):
        results = {"status": "completed", "best/val/acc": iou, "test/iou": iou, "test/loss": 1.0}
        fake_trial(tmp_path / str(job), [f"optimizer.lr={lr}"], results, [iou])
    write_summary(tmp_path)
    with open(tmp_path / "summary.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [float(r["test/iou"]) for r in rows] == [0.7, 2.5e-5]
    text = (tmp_path / "summary.md").read_text()
    assert "test/iou" in text and "2.500e-05" in text  # small values keep their digits
