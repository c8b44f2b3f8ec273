"""MLflow runs (`logger=[tensorboard,mlflow]`), with no server needed.

The default store is a SQLite file under the output root (`sqlite:///<output_root>/mlruns.db`,
artefacts beside it in `mlartifacts/`): `mlflow ui --backend-store-uri sqlite:///outputs/mlruns.db`
shows every run. Any other tracking URI (a server, Databricks) comes from the yaml. SQLite needs
the full `mlflow` package: mlflow-skinny refuses a sqlite:/// store.

- The run's flat config goes in as parameters, its `<split>/<metric>` rows as metrics at their
  steps, results.json's numbers as metrics (its words, e.g. status, as tags) at the end.
- A resumed run reopens the run whose id its checkpoint holds. A checkpoint written before the
  run existed (a signal in the first seconds) holds none: the run tagged with this run
  directory is reopened instead.
- Sweep trials are children of one parent run per sweep folder: the first trial to get there
  creates it under a file lock and writes its id to `<sweep folder>/mlflow.json`, so trials
  running in parallel share it.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from src.common.files import atomic_write_json
from src.common.locks import FileLock
from src.reporting.trackers import (
    FINISHED,
    Tracker,
    final_checkpoints,
    numbers,
    relative_name,
)

log = logging.getLogger(__name__)
SQLITE = "sqlite:///"
MAX_PARAMS = 100  # per request (MLflow's limit for one log_batch)
MAX_PARAM_LENGTH = 6000  # characters of one parameter value that MLflow keeps
RUN_DIR_TAG = "run_dir"


class MLflowTracker(Tracker):
    name = "mlflow"
    package = "mlflow"
    extra = "mlflow"  # pip install -e ".[mlflow]"

    def __init__(
        self,
        run_dir: str | Path,
        sweep_dir: Path | None = None,
        *,
        tracking_uri: str,
        experiment: str,
        run_name: str | None,
        artifact_location: str | None,
        log_checkpoints: bool,
    ) -> None:
        self.run_dir, self.sweep_dir = Path(run_dir).absolute(), sweep_dir
        self.tracking_uri = absolute_sqlite(tracking_uri)
        self.experiment, self.log_checkpoints = experiment, log_checkpoints
        self.run_name = run_name or relative_name(self.run_dir)
        self.artifact_location = artifact_location or default_artifacts(self.tracking_uri)
        self._client: Any = None

    def missing(self) -> str:
        if not (why := super().missing()) and self.tracking_uri.startswith(SQLITE):
            try:
                importlib.metadata.distribution("mlflow")
            except importlib.metadata.PackageNotFoundError:
                return "the full mlflow package (mlflow-skinny cannot use a sqlite:/// store)"
        return why

    def prepare(self) -> None:
        from mlflow.tracking import MlflowClient

        for chatty in ("alembic", "mlflow.store.db.utils"):  # a new store's tables, step by step
            logging.getLogger(chatty).setLevel(logging.WARNING)
        self._client = MlflowClient(tracking_uri=self.tracking_uri)

    def open(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        experiment_id = self._experiment_id()
        run = self._reopen(experiment_id) if self.resuming else None
        if run is None:
            tags = {RUN_DIR_TAG: str(self.run_dir)}
            if self.sweep_dir is not None:
                tags["mlflow.parentRunId"] = self._sweep_parent(experiment_id)
            run = self._client.create_run(experiment_id, run_name=self.run_name, tags=tags)
        self.run_id = run.info.run_id
        logged = run.data.params  # a resumed run keeps the values its first segment logged
        fresh = [Param(k, str(v)[:MAX_PARAM_LENGTH]) for k, v in params.items() if k not in logged]
        for start in range(0, len(fresh), MAX_PARAMS):
            self._client.log_batch(self.run_id, params=fresh[start : start + MAX_PARAMS])
        log.info("mlflow: run %s (%s) in %s", self.run_id, self.run_name, self.tracking_uri)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(key, value, now, step) for key, value in values.items()]
        self._client.log_batch(self.run_id, metrics=metrics)

    def results(self, results: dict[str, Any], step: int) -> None:
        self.scalars(step, numbers(results))
        for key, value in results.items():
            if isinstance(value, str):
                self._client.set_tag(self.run_id, key, value)

    def close(self, status: str = FINISHED) -> None:
        if not self.run_id or self._client is None:
            return
        if self.log_checkpoints and status == FINISHED:
            for path in final_checkpoints(self.run_dir):
                self._client.log_artifact(self.run_id, str(path), "checkpoints")
        self._client.set_terminated(self.run_id, status)

    # ------------------------------------------------------------------------------ helpers
    def _experiment_id(self) -> str:
        """The experiment by name, created when missing. A fresh SQLite file gets its tables
        here: one process at a time (parallel trials), under a lock beside the file."""
        lock = _store_lock(self.tracking_uri)
        with lock if lock is not None else nullcontext():
            found = self._client.get_experiment_by_name(self.experiment)
            if found is not None:
                return str(found.experiment_id)
            return str(
                self._client.create_experiment(
                    self.experiment, artifact_location=self.artifact_location
                )
            )

    def _reopen(self, experiment_id: str) -> Any:
        """The run to continue: the checkpoint's id, else the run tagged with this run dir."""
        from mlflow.exceptions import MlflowException

        run = None
        if self.run_id:
            try:
                run = self._client.get_run(self.run_id)
            except MlflowException:
                log.warning("mlflow: run %s not in %s; a new run", self.run_id, self.tracking_uri)
        elif "'" not in str(self.run_dir):
            query = f"tags.{RUN_DIR_TAG} = '{self.run_dir}'"
            found = self._client.search_runs([experiment_id], query, max_results=1)
            run = found[0] if found else None
        if run is not None:
            self._client.update_run(run.info.run_id, status="RUNNING")
        return run

    def _sweep_parent(self, experiment_id: str) -> str:
        """The sweep's parent run id: created by the first trial, shared through a file."""
        from mlflow.exceptions import MlflowException

        assert self.sweep_dir is not None
        record, key = self.sweep_dir / "mlflow.json", f"{self.tracking_uri} {experiment_id}"
        with FileLock(self.sweep_dir / "mlflow.lock"):
            parents = json.loads(record.read_text()) if record.is_file() else {}
            try:
                return str(self._client.get_run(parents[key]).info.run_id)
            except (KeyError, MlflowException):
                pass  # none yet, or not in this store
            name, folder = relative_name(self.sweep_dir), str(self.sweep_dir.absolute())
            parent = self._client.create_run(experiment_id, run_name=name, tags={"sweep": folder})
            self._client.set_terminated(parent.info.run_id)  # it holds no metrics of its own
            atomic_write_json(record, {**parents, key: parent.info.run_id})
            return str(parent.info.run_id)


def absolute_sqlite(uri: str) -> str:
    """`sqlite:///outputs/mlruns.db` (relative to the working directory) made absolute, so
    every process of a sweep, wherever it runs from, writes to the same file."""
    if not uri.startswith(SQLITE) or uri.startswith(SQLITE + "/"):
        return uri
    return SQLITE + str(Path(uri[len(SQLITE) :]).absolute())


def default_artifacts(uri: str) -> str | None:
    """Beside a SQLite file: `<its folder>/mlartifacts`; for a server, the server's choice."""
    if not uri.startswith(SQLITE):
        return None
    return str(Path(uri[len(SQLITE) :]).parent / "mlartifacts")


def _store_lock(uri: str) -> FileLock | None:
    if not uri.startswith(SQLITE):
        return None
    path = Path(uri[len(SQLITE) :])
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(path.with_name(path.name + ".lock"))


if __name__ == "__main__":
    import tempfile

    from src.reporting.trackers import TrackerThread

    with tempfile.TemporaryDirectory() as tmp:
        uri = f"{SQLITE}{tmp}/mlruns.db"
        tracker = MLflowTracker(
            Path(tmp) / "run",
            tracking_uri=uri,
            experiment="demo",
            run_name=None,
            artifact_location=None,
            log_checkpoints=False,
        )
        ids = {"mlflow": ""}
        thread = TrackerThread(tracker, ids)
        thread.call("open", {"optimizer.lr": 0.01})
        for step in range(1, 4):
            thread.call("scalars", step, {"train/loss": 1.0 / step})
        thread.call("results", {"test/acc": 0.9, "status": "completed"}, 3)
        thread.close(FINISHED)
        from mlflow.tracking import MlflowClient

        history = MlflowClient(uri).get_metric_history(ids["mlflow"], "train/loss")
        print(ids, [(m.step, round(m.value, 3)) for m in history])
