"""The schema of `hydra/sweeper=optuna_study`, the sweeper `sweep=optuna` selects.

Kept beside schema.py (which registers it) with the same rule: every default once, its meaning
beside it. The sweeper itself is hydra_plugins/optuna_study/sweeper.py -> src/sweep/study.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class OptunaSweeperConfig:
    """`hydra/sweeper=optuna_study` (selected by `sweep=optuna`): an Optuna study in a database."""

    _target_: str = "hydra_plugins.optuna_study.sweeper.OptunaStudySweeper"  # the plugin class
    _recursive_: bool = False  # the sweeper builds the sampler and pruner itself
    direction: str | None = None  # maximize | minimize; null: runner.monitor_mode's way
    n_trials: int = 12  # trials in the whole study: a rerun goes on until it holds this many
    n_jobs: int = 1  # trials asked at a time: >1 only with a parallel launcher (joblib)
    sampler: Any = field(  # how parameters are drawn; a seed moves on per sweep process
        default_factory=lambda: {"_target_": "optuna.samplers.TPESampler", "seed": 0}
    )
    pruner: Any = field(  # stops trials worse than the median so far, from epoch 2 (null: never)
        default_factory=lambda: {
            "_target_": "optuna.pruners.MedianPruner",
            "n_startup_trials": 4,
            "n_warmup_steps": 2,
        }
    )
    storage: str | None = None  # SQLAlchemy URL; null: sqlite:///<sweep dir>/optuna.db
    study_name: str | None = None  # null: `optuna` (name each study of a shared storage)
    heartbeat_interval: int = 30  # s; a trial silent for 2 intervals is stale: failed, rerun
    params: dict[str, str] = field(default_factory=dict)  # key: choice() | range() | interval()
