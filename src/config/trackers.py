"""The `logger` group's schemas: one per experiment tracker (src/reporting/), chosen as a list,
`logger=[tensorboard,mlflow]`; each option's node is `logger.<name>`. Listed in
`schema.SCHEMAS` with the other groups; see docs/trackers.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from src.reporting.wandb_tracker import WandbMode


@dataclass
class TensorBoardConfig:
    _target_: str = "src.reporting.tensorboard.TensorBoardTracker"  # event files in the run dir


@dataclass
class MLflowConfig:
    _target_: str = "src.reporting.mlflow_tracker.MLflowTracker"  # the tracker built
    tracking_uri: str = "sqlite:///${output_root}/mlruns.db"  # a local file, or http://server...
    experiment: str = "dl-template"  # the MLflow experiment runs go in (created when missing)
    run_name: str | None = None  # null: the run directory's path
    artifact_location: str | None = None  # a new experiment's artefacts (null: beside a sqlite db)
    log_checkpoints: bool = False  # upload checkpoints/ as artefacts when the run completes


@dataclass
class WandbConfig:
    _target_: str = "src.reporting.wandb_tracker.WandbTracker"  # the tracker built
    project: str = "dl-template"  # the W&B project runs go in
    entity: str | None = None  # team or user (null: the logged-in user's default)
    mode: WandbMode = WandbMode.auto  # auto: WANDB_MODE, else online if logged in and reachable
    dir: str | None = None  # where wandb/ goes (null: the run directory)
    group: str | None = None  # null: a sweep trial's group is its sweep folder
    tags: list[str] = field(default_factory=list)  # labels to filter runs by in the W&B UI
    log_checkpoints: bool = False  # upload checkpoints/ as an artefact when the run completes
