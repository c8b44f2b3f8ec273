"""The Optuna sweep through the real command line: a study that survives being killed, trials
that are pruned, and two sweep processes sharing one study. Each reads the study back from its
SQLite file with Optuna itself."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import torch
import yaml
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import TrialState

from helpers import REPO, run_cli, sweep_overrides
from src.config.sweeper import OptunaSweeperConfig
from src.launch.distributed import World
from src.sweep.space import search_space
from src.sweep.storage import open_storage, study_place
from src.sweep.study_trial import PRUNED_AT, TrialReports
from src.training.pruning import Pruning
from src.training.state import TrainState

optuna.logging.set_verbosity(optuna.logging.WARNING)
LR = "optimizer.lr=tag(log, interval(0.001, 0.05))"
FIXED = (
    "optimizer.weight_decay=0.0001",
    "runner.checkpoints=false",
    "hydra.sweeper.pruner=null",
    "hydra.sweeper.heartbeat_interval=1",
)


def optuna_args(data_root: Path, sweep_dir: Path, n_trials: int, *extra: str) -> list[str]:
    """A tiny Optuna sweep over the learning rate (batch size and weight decay fixed)."""
    swept = (LR, *FIXED, f"hydra.sweeper.n_trials={n_trials}", *extra)
    return ["sweep=optuna", *sweep_overrides(data_root, sweep_dir, *swept)]


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def load(sweep_dir: Path) -> optuna.Study:
    return optuna.load_study(study_name="optuna", storage=f"sqlite:///{sweep_dir / 'optuna.db'}")


def start(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "src.main", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def launched(log: str) -> list[int]:
    """The job numbers (= trial numbers) a sweep process launched, from Hydra's log."""
    return [int(n) for n in re.findall(r"\t#(\d+) : ", log)]


def test_a_killed_optuna_sweep_continues_its_study_when_run_again(
    data_root: Path, tmp_path: Path
) -> None:
    sweep_dir = tmp_path / "study"
    args = optuna_args(data_root, sweep_dir, 3)
    first = start(args)
    deadline = time.monotonic() + 120
    while not (sweep_dir / "1" / ".hydra").is_dir():  # trial 1 has started: kill the sweep
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()[0]
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    before = load(sweep_dir).get_trials()
    assert [t.state for t in before] == [TrialState.COMPLETE, TrialState.RUNNING]
    finished = (sweep_dir / "0" / "results.json").stat().st_mtime_ns

    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    assert sorted(launched(again.stdout + again.stderr)) == [2, 3]  # the cut-off one, a new one
    trials = load(sweep_dir).get_trials()
    assert [t.number for t in trials] == [0, 1, 2, 3]  # no number twice, nothing lost
    states = [t.state for t in trials]
    assert states == [
        TrialState.COMPLETE,
        TrialState.FAIL,
        TrialState.COMPLETE,
        TrialState.COMPLETE,
    ]
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == 1]  # queued again
    assert len(retry) == 1 and retry[0].params == before[1].params  # the killed one's parameters
    assert trials[0].value == before[0].value  # the first sweep's result is kept, not rerun
    assert (sweep_dir / "0" / "results.json").stat().st_mtime_ns == finished
    best = load(sweep_dir).best_value
    assert best == max(t.value for t in trials if t.state == TrialState.COMPLETE) >= trials[0].value
    assert json.loads((sweep_dir / "1" / "results.json").read_text())["status"] == "retried"
    verdict = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert verdict["best_value"] == best and verdict["trials"] == {"complete": 3, "fail": 1}


def test_pruned_trials_are_recorded_as_pruned_in_the_study_and_the_summary(
    data_root: Path, tmp_path: Path
) -> None:
    sweep_dir = tmp_path / "pruned"
    # Every value is below 2: from its second epoch on, the threshold pruner prunes any trial
    # still training. max_epochs=1 ends before that; max_epochs=3 is pruned after 2 epochs.
    args = optuna_args(
        data_root,
        sweep_dir,
        2,
        "runner.max_epochs=choice(1,3)",
        "runner.limit_train_batches=2",
        "optimizer.lr=0.01",
        "hydra.sweeper.sampler._target_=optuna.samplers.BruteForceSampler",
        "hydra.sweeper.pruner={_target_: optuna.pruners.ThresholdPruner,"
        " lower: 2, n_warmup_steps: 2}",
    )
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr  # pruned is not a failure
    trials = {t.params["runner.max_epochs"]: t for t in load(sweep_dir).get_trials()}
    assert trials[1].state == TrialState.COMPLETE and list(trials[1].intermediate_values) == [1]
    pruned = trials[3]
    assert pruned.state == TrialState.PRUNED and list(pruned.intermediate_values) == [1, 2]
    results = json.loads((sweep_dir / str(pruned.number) / "results.json").read_text())
    assert results["status"] == "pruned" and results["epochs"] == 2  # 2 of its 3 epochs
    assert results["stop_reason"].startswith("pruned: val/acc")
    assert pruned.value == pytest.approx(pruned.intermediate_values[2])
    status = {row["trial"]: row["status"] for row in read_csv(sweep_dir / "summary.csv")}
    assert status == {str(pruned.number): "pruned", str(trials[1].number): "completed"}
    counts = (sweep_dir / "summary.md").read_text().splitlines()[2]
    assert "1 completed" in counts and "1 pruned" in counts


def test_two_sweep_processes_share_one_study(data_root: Path, tmp_path: Path) -> None:
    sweep_dir = tmp_path / "shared"
    args = optuna_args(data_root, sweep_dir, 4)
    workers = [start(args), start(args)]
    logs = [w.communicate(timeout=300)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], logs
    jobs = [launched(log) for log in logs]
    assert all(jobs) and sorted(jobs[0] + jobs[1]) == [0, 1, 2, 3]  # both worked, none twice
    trials = load(sweep_dir).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    assert len({t.params["optimizer.lr"] for t in trials}) == 4  # no draw repeated
    rows = read_csv(sweep_dir / "summary.csv")  # the last process to finish summarises all
    assert sorted(int(r["trial"]) for r in rows) == [0, 1, 2, 3]
    for row in rows:
        trial = trials[int(row["trial"])]
        assert row["status"] == "completed"
        assert float(row["best/val/acc"]) == pytest.approx(trial.value)
        assert float(row["optimizer.lr"]) == pytest.approx(trial.params["optimizer.lr"])
    verdict = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert verdict["best_value"] == pytest.approx(float(rows[0]["best/val/acc"]))
    assert verdict["best_params"]["optimizer.lr"] == pytest.approx(float(rows[0]["optimizer.lr"]))
    assert "Optuna's best: `optimizer.lr=" in (sweep_dir / "summary.md").read_text()


def test_hydra_finds_the_sweeper_among_its_plugins() -> None:
    from hydra.core.plugins import Plugins
    from hydra.plugins.sweeper import Sweeper

    found = {f"{p.__module__}.{p.__name__}" for p in Plugins.instance().discover(Sweeper)}
    assert OptunaSweeperConfig._target_ in found


def test_the_search_space_is_written_in_hydras_sweep_syntax() -> None:
    space, fixed = search_space(
        [
            "optimizer.lr=tag(log, interval(0.001, 0.05))",
            "runner.max_epochs=range(2, 8, 2)",
            "data.batch_size=choice(128, 256)",
            "model.dropout=interval(0, 0.5)",
            "model=cnn",
            "data.batch_size=64",  # a later plain value replaces the yaml's choice
        ]
    )
    assert space == {
        "optimizer.lr": FloatDistribution(0.001, 0.05, log=True),
        "runner.max_epochs": IntDistribution(2, 6, step=2),  # range() leaves out its end
        "model.dropout": FloatDistribution(0.0, 0.5),
    }
    assert fixed == {"model": "cnn", "data.batch_size": "64"}


def test_the_median_pruner_stops_a_trial_behind_the_finished_ones(tmp_path: Path) -> None:
    place = study_place(None, None, tmp_path)
    storage, name = open_storage(place), place.study_name
    study = optuna.create_study(storage=storage, study_name=name, direction="maximize")
    for curve in ([0.5, 0.6, 0.7], [0.4, 0.5, 0.6]):  # two finished trials, accuracy per epoch
        done = study.ask()
        for epoch, value in enumerate(curve, start=1):
            done.report(value, epoch)
        study.tell(done, curve[-1])
    running = study.ask()
    median = {"_target_": "optuna.pruners.MedianPruner", "n_startup_trials": 2}
    reports = TrialReports(place, running.number, median)
    runner = SimpleNamespace(state=TrainState(), world=World(), device=torch.device("cpu"))
    pruning = Pruning("val/acc", reports)
    for epoch, value in enumerate([0.45, 0.5, 0.9], start=1):  # at, then behind the median
        runner.state.epoch = epoch
        pruning.on_validation_end(runner, {"val/acc": value})
        if runner.state.stop_reason:
            break
    assert pruning.pruned and runner.state.epoch == 2
    trial = study.get_trials()[running.number]
    assert trial.intermediate_values == {1: 0.45, 2: 0.5} and trial.user_attrs[PRUNED_AT] == 2
