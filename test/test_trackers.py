"""Experiment trackers for real: MLflow on a local SQLite store and W&B offline, no mocks.

The runs log to both trackers at once; the store and the tracker imports are shared by the
module (MLflow's first use costs a few seconds).
"""

from __future__ import annotations

import json
import os
import signal
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import forkserver
import pytest

from helpers import REPO, cli_env, run_cli, sweep_overrides, tiny_overrides
from src.reporting.logger import read_metrics
from src.reporting.trackers import FINISHED, Tracker, TrackerThread
from src.training.checkpoint import load_checkpoint

INSTALL = "the tracker tests need MLflow and W&B: pip install -e '.[mlflow,wandb]'"
mlflow_tracking = pytest.importorskip("mlflow.tracking", reason=INSTALL)
wandb_proto = pytest.importorskip("wandb.proto.wandb_internal_pb2", reason=INSTALL)

LOGGERS = "logger=[mlflow,wandb]"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The output root: MLflow's sqlite:///<root>/mlruns.db, shared by the module's runs."""
    return tmp_path_factory.mktemp("outputs")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """W&B offline whatever the machine's login, its own files kept out of the home folder."""
    home = tmp_path_factory.mktemp("wandb-home")
    folders = {f"WANDB_{k}_DIR": str(home / k.lower()) for k in ("CONFIG", "CACHE", "DATA")}
    return {"WANDB_MODE": "offline", **folders}


def client(store: Path) -> Any:
    return mlflow_tracking.MlflowClient(f"sqlite:///{store}/mlruns.db")


def mlflow_runs(store: Path, experiment: str) -> list[Any]:
    found = client(store).get_experiment_by_name(experiment)
    return client(store).search_runs([found.experiment_id]) if found else []


def wandb_records(run_file: Path) -> Iterator[Any]:
    """The records of an offline run's `run-<id>.wandb` file (the log `wandb sync` uploads):
    LevelDB-style blocks of 32 KiB after a 7-byte header, each record a protobuf `Record`."""
    data, block, pos, parts = run_file.read_bytes(), 32768, 7, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _checksum, length, kind = struct.unpack_from("<IHB", data, pos)
        parts, pos = parts + data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            record = wandb_proto.Record()
            record.ParseFromString(parts)
            yield record
            parts = b""


def wandb_runs(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))


def csv_metrics(run_dir: Path) -> dict[tuple[str, int], float]:
    """metrics.csv as {(<split>/<column>, step): value}, the empty cells left out."""
    values = {}
    for row in read_metrics(run_dir / "metrics.csv"):
        for key, value in row.items():
            if key not in ("step", "epoch", "split") and value != "":
                values[(f"{row['split']}/{key}", int(row["step"]))] = float(value)
    return values


def assert_same_numbers(logged: dict[Any, float], expected: dict[Any, float]) -> None:
    assert logged.keys() == expected.keys()
    for key, value in expected.items():  # metrics.csv keeps 8 significant digits
        assert logged[key] == pytest.approx(value, rel=1e-6, abs=1e-12), key


def wait_for(predicate: Any, proc: forkserver.Started, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


# ------------------------------------------------------------------ a run stopped and resumed
@pytest.fixture(scope="module")
def resumed_run(
    data_root: Path, store: Path, env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """Four epochs with both trackers: SIGTERM once their runs are open, then `resume=<run dir>`
    (the tracker choice comes back from the run's own overrides)."""
    run_dir = tmp_path_factory.mktemp("resumed") / "run"
    args = [
        *tiny_overrides(data_root, run_dir),
        *("data.eval_batch_size=10", "runner.max_epochs=4", f"output_root={store}", LOGGERS),
        "logger.mlflow.experiment=resumed",
        *("logger.mlflow.log_checkpoints=true", "logger.wandb.log_checkpoints=true"),
    ]
    probe = {"PYTHONPATH": f"{REPO / 'test'}{os.pathsep}{REPO}", "EVAL_DELAY_S": "1.0"}
    # Through the probe: a validation takes 10 s, so training outlasts the trackers' imports.
    proc = forkserver.start("ddp_probe", args, REPO, cli_env(**env, **probe))
    log = run_dir / "main.log"
    opened = ("mlflow: run ", "wandb: offline run ")
    wait_for(lambda: log.is_file() and all(word in log.read_text() for word in opened), proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, out + err
    assert "stopped by signal 15" in err
    result = run_cli(f"resume={run_dir}", f"output_root={store}", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return run_dir


def test_a_resumed_run_continues_the_same_tracker_runs(resumed_run: Path, store: Path) -> None:
    ids = load_checkpoint(resumed_run / "checkpoints" / "last.pt")["trackers"]
    (run,) = mlflow_runs(store, "resumed")  # one MLflow run across both segments
    assert run.info.run_id == ids["mlflow"] and run.info.status == FINISHED
    assert run.data.tags["run_dir"] == str(resumed_run)
    segments = wandb_runs(resumed_run)  # W&B offline: one folder per segment, the same run id
    assert len(segments) == 2
    assert {path.name for path in segments} == {f"run-{ids['wandb']}.wandb"}
    runs = [r.run for path in segments for r in wandb_records(path) if r.HasField("run")]
    assert [run.run_id for run in runs] == [ids["wandb"]] * 2


def test_checkpoints_are_artefacts_when_asked(resumed_run: Path, store: Path) -> None:
    (run,) = mlflow_runs(store, "resumed")  # once, when the run completes
    stored = client(store).list_artifacts(run.info.run_id, "checkpoints")
    assert sorted(Path(a.path).name for a in stored) == ["best.pt", "last.pt"]
    artefacts = [r.artifact for p in wandb_runs(resumed_run) for r in wandb_records(p)]
    assert [sorted(e.path for e in a.manifest.contents) for a in artefacts if a.name] == [
        ["best.pt", "last.pt"]
    ]


def test_logged_metrics_match_metrics_csv_and_results(resumed_run: Path, store: Path) -> None:
    expected = csv_metrics(resumed_run)
    assert {key for key, _ in expected} >= {"train/loss", "train/acc", "train/lr", "val/acc"}
    results = json.loads((resumed_run / "results.json").read_text())
    final = {k: float(v) for k, v in results.items() if type(v) in (int, float)}

    (run,) = mlflow_runs(store, "resumed")
    history = {
        (key, m.step): m.value
        for key in {key for key, _ in expected}
        for m in client(store).get_metric_history(run.info.run_id, key)
    }
    assert_same_numbers(history, expected)
    assert set(run.data.metrics) == {key for key, _ in expected} | set(final)
    assert_same_numbers({k: v for k, v in run.data.metrics.items() if k in final}, final)
    assert run.data.tags["status"] == "completed"
    assert run.data.params["optimizer.lr"] == "0.01" and run.data.params["runner.max_epochs"] == "4"

    logged, summary = {}, {}
    for path in wandb_runs(resumed_run):
        for record in wandb_records(path):
            items = {i.key or "/".join(i.nested_key): i.value_json for i in record.history.item}
            step = json.loads(items.pop("step", "null"))
            logged |= {(k, step): json.loads(v) for k, v in items.items() if not k.startswith("_")}
            summary |= {i.key: json.loads(i.value_json) for i in record.summary.update if i.key}
    assert_same_numbers(logged, expected)
    assert_same_numbers({k: v for k, v in summary.items() if k in final}, final)
    assert summary["status"] == "completed"


# ------------------------------------------------------------------------ a sweep, grouped
def test_the_trials_of_a_sweep_are_grouped(
    data_root: Path, store: Path, env: dict[str, str], tmp_path: Path
) -> None:
    sweep_dir = tmp_path / "sweep"
    args = sweep_overrides(data_root, sweep_dir, "seed=0,1", f"output_root={store}", LOGGERS)
    result = run_cli("--multirun", *args, "logger.mlflow.experiment=swept", env=env)
    assert result.returncode == 0, result.stdout + result.stderr

    runs = {run.info.run_name: run for run in mlflow_runs(store, "swept")}
    (parent,) = [run for run in runs.values() if "mlflow.parentRunId" not in run.data.tags]
    assert parent.data.tags["sweep"] == str(sweep_dir)
    children = [run for run in runs.values() if run is not parent]
    assert sorted(run.data.tags["run_dir"] for run in children) == [
        str(sweep_dir / "0"),
        str(sweep_dir / "1"),
    ]
    assert {run.data.tags["mlflow.parentRunId"] for run in children} == {parent.info.run_id}
    assert not any(client(store).list_artifacts(run.info.run_id) for run in children)  # default

    groups = [
        record.run.run_group
        for trial in ("0", "1")
        for path in wandb_runs(sweep_dir / trial)
        for record in wandb_records(path)
        if record.HasField("run")
    ]
    assert groups == [str(sweep_dir)] * 2


# ----------------------------------------------------------------- a tracker not installed
BLOCKER = '''
import sys
from importlib.abc import MetaPathFinder


class NotInstalled(MetaPathFinder):
    """Imports of mlflow and wandb fail as they do where the packages are missing."""

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("mlflow", "wandb"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, NotInstalled())
'''


def test_a_tracker_that_is_not_installed_is_one_line_and_no_run(
    data_root: Path, tmp_path: Path
) -> None:
    shim, run_dir = tmp_path / "shim", tmp_path / "run"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(BLOCKER)
    path = {"PYTHONPATH": f"{shim}{os.pathsep}{REPO}"}
    args = [*tiny_overrides(data_root, run_dir), f"output_root={tmp_path}"]
    # A fresh interpreter: sitecustomize runs at start-up (a forked one has started already).
    result = run_cli(*args, "logger=[tensorboard,mlflow,wandb]", env=path, fresh=True)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.splitlines() == [
        "error: logger=mlflow needs the mlflow package; logger=wandb needs the wandb package: "
        "pip install -e '.[mlflow,wandb]'"
    ]
    assert not run_dir.exists() and not (tmp_path / "mlruns.db").exists()


# ----------------------------------------------------------------------- a tracker failing
class Failing(Tracker):
    name = "failing"

    def __init__(self) -> None:
        self.calls: list[str] = []

    def scalars(self, step: int, values: dict[str, float]) -> None:
        self.calls.append(f"scalars {step}")
        raise ConnectionError("the store went away")

    def close(self, status: str) -> None:
        self.calls.append(f"close {status}")


def test_a_failing_tracker_is_switched_off_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tracker = Failing()
    thread = TrackerThread(tracker, {})
    thread.call("open", {"optimizer.lr": 0.01})
    for step in (1, 2, 3):
        thread.call("scalars", step, {"train/loss": 1.0})
    thread.close(FINISHED)
    assert tracker.calls == ["scalars 1", "close FAILED"]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [
        "logger=failing stopped (scalars: the store went away); the run goes on"
    ], warnings
