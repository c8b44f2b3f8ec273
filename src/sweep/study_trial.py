"""The trial's side of an Optuna study: report the validation metric, ask the pruner.

A trial of the Optuna sweep (src/sweep/study.py) runs as job number N = its Optuna trial number,
with the sweeper's config in its Hydra config: that is all it needs to open the study and find
its trial. `study_reports` returns the `report(step, value) -> prune?` function that the training
loop's `Pruning` callback calls after each validation (when `prunes`: this sweep, a pruner).
A trial that is pruned says so in its user attributes; the sweep then tells the study.
"""

from __future__ import annotations

from typing import Any

from src.launch.distributed import world_from_env
from src.training.callbacks import Callback
from src.training.pruning import Pruning

PRUNED_AT = "pruned_at_epoch"  # the user attribute a pruned trial sets (read by the sweep)
SWEEPER_CLASS = "OptunaStudySweeper"  # hydra.sweeper._target_ ends with it for this sweeper


def trial_callbacks(monitor: str, hydra_cfg: Any) -> list[Callback]:
    """A trial of the Optuna sweep reports `monitor` after each validation and may be pruned
    (the first rank asks the study; the others follow its answer)."""
    if not prunes(hydra_cfg):
        return []
    return [Pruning(monitor, study_reports(hydra_cfg) if world_from_env().is_main else None)]


def prunes(hydra_cfg: Any) -> bool:
    """True for a trial of this project's Optuna sweep with a pruner."""
    sweeper = hydra_cfg.sweeper
    return str(sweeper.get("_target_", "")).endswith(SWEEPER_CLASS) and bool(sweeper.get("pruner"))


def study_reports(hydra_cfg: Any) -> TrialReports:
    """`report(step, value) -> bool` for this trial of the Optuna sweep (see `prunes`)."""
    from src.sweep.storage import study_place

    sweeper = hydra_cfg.sweeper

    place = study_place(sweeper.storage, sweeper.study_name, hydra_cfg.sweep.dir)
    return TrialReports(place, int(hydra_cfg.job.num), sweeper.pruner)


class TrialReports:
    """Intermediate values of one running trial, and the pruner's verdict on them."""

    def __init__(self, place: Any, number: int, pruner: Any) -> None:
        import optuna
        from hydra.utils import instantiate

        from src.sweep.storage import open_storage

        storage = open_storage(place)
        study = optuna.load_study(
            study_name=place.study_name, storage=storage, pruner=instantiate(pruner)
        )
        # Optuna reaches a trial from outside its objective by id; the number is what we know.
        trial_id = storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
        self.trial = optuna.trial.Trial(study, trial_id)

    def __call__(self, step: int, value: float) -> bool:
        self.trial.report(value, step)
        if not self.trial.should_prune():
            return False
        self.trial.set_user_attr(PRUNED_AT, step)
        return True


if __name__ == "__main__":
    import tempfile

    import optuna

    from src.sweep.storage import open_storage, study_place

    with tempfile.TemporaryDirectory() as tmp:
        place = study_place(None, None, tmp)
        study = optuna.create_study(storage=open_storage(place), study_name=place.study_name)
        for curve in ([0.5, 0.3], [0.6, 0.4]):  # two finished trials (minimised)
            done = study.ask()
            for step, value in enumerate(curve):
                done.report(value, step)
            study.tell(done, curve[-1])
        number = study.ask().number
        reports = TrialReports(
            place, number, {"_target_": "optuna.pruners.MedianPruner", "n_startup_trials": 2}
        )
        print(
            "0.45 at step 0, pruned:", reports(0, 0.45), "| 0.9 at step 1, pruned:", reports(1, 0.9)
        )
