"""Where an Optuna study lives, and how the sweep and its trial processes open it.

The study is kept in a database (Optuna's RDB storage, any SQLAlchemy URL). By default that is
`optuna.db`, an SQLite file in the sweep folder, and the study is named `optuna`: the same sweep
run again into the same folder (`hydra.sweep.dir=...`) opens the same study and goes on with it.
Both the sweep and each trial derive the place from the same sweeper config, so a trial process
(in-process, a joblib worker or a SLURM job) reaches the study with nothing but its job number,
which the sweep sets to the Optuna trial number.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optuna.exceptions import ExperimentalWarning
from optuna.storages import RDBStorage

DEFAULT_DB = "optuna.db"  # in the sweep folder, when `storage` is not set
DEFAULT_STUDY = "optuna"  # the study name when `study_name` is not set
SQLITE_TIMEOUT_S = 60  # how long a writer waits for another process's write to the SQLite file


@dataclass(frozen=True)
class StudyPlace:
    storage: str  # an SQLAlchemy URL, e.g. sqlite:////abs/path/optuna.db
    study_name: str
    lock: Path  # the file that orders the sweep processes sharing this study

    @property
    def sqlite_file(self) -> Path | None:
        prefix = "sqlite:///"
        return Path(self.storage[len(prefix) :]) if self.storage.startswith(prefix) else None


def study_place(storage: str | None, study_name: str | None, sweep_dir: str | Path) -> StudyPlace:
    """The storage URL and study name a sweep uses (defaults: see the module docstring).

    Processes that share a study take turns to claim trials under a lock file: beside the
    SQLite file, or in the sweep folder for a database server (then share the sweep folder too).
    """
    sweep_dir = Path(sweep_dir).resolve()
    url = storage or f"sqlite:///{sweep_dir / DEFAULT_DB}"
    place = StudyPlace(url, study_name or DEFAULT_STUDY, sweep_dir / ".optuna.lock")
    sqlite = place.sqlite_file
    if sqlite is not None and str(sqlite) not in ("", ":memory:"):
        place = StudyPlace(url, place.study_name, sqlite.with_name(sqlite.name + ".lock"))
    return place


def open_storage(
    place: StudyPlace,
    heartbeat_interval: int | None = None,
    on_stale: Callable[[Any, Any], None] | None = None,
) -> RDBStorage:
    """The study's database. With a heartbeat, a trial whose sweep stopped beating for two
    intervals (killed, its machine gone) is stale: `on_stale` is called for it."""
    engine: dict[str, Any] = {}
    sqlite = place.sqlite_file
    if sqlite is not None:
        sqlite.parent.mkdir(parents=True, exist_ok=True)
        engine = {"connect_args": {"timeout": SQLITE_TIMEOUT_S}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)  # the heartbeat's arguments
        return RDBStorage(
            place.storage,
            engine_kwargs=engine,
            heartbeat_interval=heartbeat_interval,
            heartbeat_stale_trial_callback=on_stale if heartbeat_interval else None,
        )


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        place = study_place(None, None, tmp)
        print(place)
        storage = open_storage(place, heartbeat_interval=10)
        print("heartbeat every", storage.get_heartbeat_interval(), "s")
