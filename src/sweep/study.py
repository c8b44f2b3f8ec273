"""An Optuna study as a Hydra sweep: ask for trials, launch them, tell the study how they ended.

    open (or create) the study in its database
    until the study holds n_trials trials:
        under the study's lock: fail stale trials (they are queued again), ask for up to n_jobs
        launch them as jobs numbered by their trial numbers (folder <sweep dir>/<number>)
        tell each: complete with its value, pruned, or failed
    wait for trials that other sweep processes still run; write optimization_results.yaml

`n_trials` counts the whole study, not this invocation: run the same sweep again and it goes on
where it stopped, or does nothing when the study is full. Several sweep processes pointed at one
study share it: they claim trials in turn under a lock, so together they run n_trials. While its
trials run, the sweep records a heartbeat for each; a trial whose sweep died (killed, its machine
gone) stops beating, and the next sweep process to look marks it failed and queues its
parameters again (at most MAX_RETRIES times). A sweep stopped by a signal does that itself on
the way out. Such a trial's folder says `retried`.
"""

from __future__ import annotations

import logging
import math
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import optuna
import yaml
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher
from hydra.utils import instantiate
from optuna.exceptions import ExperimentalWarning
from optuna.storages import RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.trial import FrozenTrial, Trial, TrialState

from src.common.errors import UserError
from src.common.files import atomic_write_bytes, atomic_write_json
from src.common.locks import FileLock
from src.sweep.space import as_override, search_space
from src.sweep.storage import StudyPlace, open_storage, study_place
from src.sweep.study_trial import PRUNED_AT

log = logging.getLogger(__name__)

MAX_RETRIES = 2  # times the parameters of a trial cut off by a dead sweep are run again
RUN_DIR = "run_dir"  # the user attribute holding a trial's folder
Direction = Literal["maximize", "minimize"]
DIRECTIONS: dict[str, Direction] = {
    "max": "maximize",
    "min": "minimize",
    "maximize": "maximize",
    "minimize": "minimize",
}


class StudyError(UserError):
    """The study in the storage does not fit this sweep (e.g. its direction differs)."""


@dataclass
class StudySettings:
    """The sweeper's config (schema and meanings: OptunaSweeperConfig in src/config/sweeper.py)."""

    direction: str
    n_trials: int
    n_jobs: int
    sampler: Any
    pruner: Any
    storage: str | None
    study_name: str | None
    heartbeat_interval: int
    params: dict[str, str]


class StudySweep:
    def __init__(self, settings: StudySettings, launcher: Launcher, sweep_dir: str) -> None:
        if settings.direction not in DIRECTIONS:
            raise StudyError(
                f"direction must be one of {sorted(DIRECTIONS)}, got {settings.direction}"
            )
        self.settings, self.launcher = settings, launcher
        self.sweep_dir = Path(sweep_dir)
        self.place: StudyPlace = study_place(settings.storage, settings.study_name, sweep_dir)
        self.running: dict[int, Trial] = {}  # this process's trials, by number
        self.sampler_ready = False
        self.exhausted = False  # the sampler has drawn its whole space (grid, brute force)

    def run(self, arguments: Sequence[str]) -> None:
        params = [f"{key}={value}" for key, value in self.settings.params.items()]
        distributions, fixed = search_space([*params, *arguments])
        with FileLock(self.place.lock).acquire(wait=True):  # one process creates the tables
            self.storage = storage = open_storage(
                self.place, self.settings.heartbeat_interval, self._retry
            )
            study = optuna.create_study(
                storage=storage,
                study_name=self.place.study_name,
                direction=DIRECTIONS[self.settings.direction],
                pruner=instantiate(self.settings.pruner) if self.settings.pruner else None,
                load_if_exists=True,
            )
        self._check_direction(study)
        log.info("study %r in %s", self.place.study_name, self.place.storage)
        heartbeat = Heartbeat(storage, self.settings.heartbeat_interval, self.running)
        with heartbeat:
            while True:
                trials = self._claim(study, distributions)
                if trials:
                    self._launch(study, trials, fixed)
                elif self._others_running(study):
                    heartbeat.stopped.wait(self.settings.heartbeat_interval)
                else:
                    break
        write_results(study, self.sweep_dir / "optimization_results.yaml")

    def _check_direction(self, study: optuna.Study) -> None:
        wanted = DIRECTIONS[self.settings.direction]
        if study.direction.name.lower() != wanted:
            raise StudyError(
                f"study {self.place.study_name!r} in {self.place.storage} is set to "
                f"{study.direction.name.lower()}, this sweep to {wanted}: name another study"
            )

    def _claim(self, study: optuna.Study, distributions: dict[str, Any]) -> list[Trial]:
        """Up to n_jobs trials, queued retries first, until the study holds n_trials."""
        with FileLock(self.place.lock).acquire(wait=True), warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            fail_stale_trials(study)
            trials = study.get_trials(deepcopy=False)
            waiting = sum(t.state == TrialState.WAITING for t in trials)
            free = max(0, self.settings.n_trials - counted(trials)) + waiting
            if not self.sampler_ready:  # a fresh seed per process: no repeat of earlier draws
                study.sampler = sampler(self.settings.sampler, offset=len(trials))
                self.sampler_ready = True
            # Optuna warns that its heartbeat is meant for optimize(); we beat for it ourselves.
            warnings.filterwarnings("ignore", "Heartbeat of storage", UserWarning)
            wanted = 0 if self.exhausted else min(self.settings.n_jobs, free)
            claimed = [study.ask(distributions) for _ in range(wanted)]
            for trial in claimed:
                self.running[trial.number] = trial
                self.storage.record_heartbeat(trial._trial_id)  # beating before the lock opens
                trial.set_user_attr(RUN_DIR, str((self.sweep_dir / str(trial.number)).resolve()))
        return claimed

    def _launch(self, study: optuna.Study, trials: list[Trial], fixed: dict[str, str]) -> None:
        """Run the trials as jobs numbered by trial number; tell the study how each ended."""
        try:
            for group in consecutive(trials):
                overrides = [
                    tuple(as_override(k, v) for k, v in {**t.params, **fixed}.items())
                    for t in group
                ]
                returns = self.launcher.launch(overrides, initial_job_idx=group[0].number)
                for trial, job in zip(group, returns):
                    self.exhausted |= tell(study, trial, job)
                    del self.running[trial.number]
        except BaseException:  # a signal or a launcher error: queue the unfinished trials again
            for trial in self.running.values():
                study.tell(trial, state=TrialState.FAIL)
                self._retry(study, frozen(study, trial.number))
            self.running.clear()
            raise

    def _others_running(self, study: optuna.Study) -> bool:
        """Trials of other sweep processes still run: wait for them (or for them to go stale)."""
        others = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]
        if others:
            log.info("waiting for %d trial(s) of other sweep processes", len(others))
        return bool(others)

    def _retry(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Queue a failed-while-running trial's parameters again; its folder says so."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES)(study, trial)
        log.warning("trial %d was cut off; its parameters are queued again", trial.number)
        run_dir = trial.user_attrs.get(RUN_DIR)
        if run_dir and Path(run_dir).is_dir():
            message = (
                "the sweep stopped while this trial ran; its parameters run again as a new trial"
            )
            atomic_write_json(
                Path(run_dir) / "results.json", {"status": "retried", "error": message}
            )


def counted(trials: list[FrozenTrial]) -> int:
    """Trials that use up the study's budget: all but those whose parameters were queued again."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        retried = {n for t in trials for n in RetryHeartbeatStaleTrialCallback.retry_history(t)}
    return sum(t.number not in retried for t in trials)


def sampler(config: Any, offset: int) -> optuna.samplers.BaseSampler:
    """The configured sampler; a seed moves on by the trials the study already has."""
    if config.get("seed") is None:
        return instantiate(config)
    return instantiate(config, seed=int(config["seed"]) + offset)


def consecutive(trials: list[Trial]) -> list[list[Trial]]:
    """Runs of consecutive trial numbers: one launch each (a job's number is its trial's)."""
    groups: list[list[Trial]] = []
    for trial in sorted(trials, key=lambda t: t.number):
        if groups and groups[-1][-1].number + 1 == trial.number:
            groups[-1].append(trial)
        else:
            groups.append([trial])
    return groups


def tell(study: optuna.Study, trial: Trial, job: JobReturn) -> bool:
    """Complete with the job's value; pruned when the trial said so; failed otherwise. True
    when the sampler has no more to draw."""
    value = job.return_value if job.status == JobStatus.COMPLETED else None
    try:
        if PRUNED_AT in frozen(study, trial.number).user_attrs:  # set by the trial's process
            study.tell(trial, state=TrialState.PRUNED)
        elif isinstance(value, int | float) and math.isfinite(value):
            study.tell(trial, float(value))
        else:
            study.tell(trial, state=TrialState.FAIL)
    except RuntimeError as err:  # the trial is stored; the sampler's study.stop() needs optimize()
        if "Study.stop" not in str(err):
            raise
        return True
    return False


def frozen(study: optuna.Study, number: int) -> FrozenTrial:
    """The trial as the storage has it now (a `Trial` object keeps its own stale copy)."""
    return next(t for t in study.get_trials(deepcopy=False) if t.number == number)


def write_results(study: optuna.Study, path: Path) -> None:
    """The study's verdict: best parameters and value, and how its trials ended."""
    trials = study.get_trials(deepcopy=False)
    states = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}
    verdict: dict[str, Any] = {"name": "optuna", "study_name": study.study_name}
    if any(t.state == TrialState.COMPLETE for t in trials):
        best = study.best_trial
        verdict |= {"best_params": best.params, "best_value": best.value, "best_trial": best.number}
    verdict["trials"] = {state: n for state, n in states.items() if n}
    atomic_write_bytes(path, yaml.safe_dump(verdict, sort_keys=False).encode())


class Heartbeat:
    """Records a heartbeat for each running trial of this process until the sweep ends."""

    def __init__(self, storage: Any, interval: int, running: dict[int, Trial]) -> None:
        self.storage, self.interval, self.running = storage, interval, running
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._beat, name="optuna-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join()

    def _beat(self) -> None:
        while not self.stopped.wait(self.interval):
            for trial in list(self.running.values()):
                self.storage.record_heartbeat(trial._trial_id)
