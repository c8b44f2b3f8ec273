"""Train a model: `python -m src.main [overrides]` (or `make run ARGS="..."`).

This file is the composition root: Hydra composes the config, `train` builds every object from
it and hands them to the Runner, which owns the loop. Nothing else imports this module.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from contextlib import closing, nullcontext
from functools import partial
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from src import build
from src.config.schema import Config, register_configs
from src.config.validate import check_config
from src.data.loaders import Loaders
from src.launch import cli
from src.launch.allocator import keep_freed_memory
from src.launch.distributed import (
    World,
    barrier,
    init_distributed,
    resolve_device,
    shutdown_distributed,
    world_from_env,
)
from src.launch.run_dir import UndoFailedStart
from src.launch.run_stamp import register_run_stamp, run_stamp
from src.launch.signals import StopRequest
from src.reporting.logger import MetricLogger
from src.reporting.progress import Progress
from src.reporting.records import RecordWriter
from src.reporting.results import write_results
from src.reporting.trackers import Tracker, flatten, saved_run_ids
from src.runner import Runner
from src.sweep.study_trial import trial_callbacks
from src.sweep.trial import monitored_value, run_trial
from src.task.base import Task
from src.training import debug
from src.training.callbacks import Callback
from src.training.checkpoint import load_checkpoint
from src.training.options import RunnerOptions
from src.training.pruning import pruned
from src.training.resume import (
    ResumePlan,
    elastic_restart,
    load_optimizer_moments,
    locate_checkpoint,
    plan_resume,
    resume_argv,
    schedule_of,
)
from src.training.state import TrainState, seed_everything
from src.training.strategy import build_strategy, unwrapped

log = logging.getLogger(__name__)
CONFIG_DIR = Path(__file__).resolve().parent / "config"
register_configs()
register_run_stamp()


def train(
    cfg: DictConfig,
    run_dir: Path,
    records_dir: Path | None = None,
    tags: dict[str, Any] | None = None,
    on_training: Callable[[], None] = lambda: None,
    sweep_dir: Path | None = None,
    callbacks: Sequence[Callback] = (),
) -> dict[str, Any]:
    """Build everything from the config, fit, test; return the results written to results.json.

    Signals are handled for the whole run (docs/reliability.md): until training begins there is
    nothing to save and a signal stops at once; from `on_training()` on, the loop finishes its
    step (or evaluation batch), writes last.pt and stops. `tags` are stored in results.json as
    they are (a sweep trial's identity, see src/sweep); a trial's trackers group it with the
    other trials of `sweep_dir`, and `callbacks` join the config's (a trial's pruning).
    """
    started = time.perf_counter()
    with StopRequest(immediate=True) as stop:
        check_config(cfg)
        build.check_compile(cfg)
        task = build.build_task(cfg)  # checks runner.monitor against the task's metric names
        trackers = build.build_trackers(cfg, run_dir, sweep_dir)  # not installed: one line
        world = world_from_env()
        device = resolve_device(cfg.device, world)
        records = RecordWriter(records_dir or run_dir, device, enabled=world.is_main)
        try:
            runner, data = set_up(cfg, task, trackers, run_dir, world, device, started, callbacks)
        except BaseException:
            records.join()  # a failed start is undone by the caller once the records are written
            raise
        runner.stop = stop
        stop.defer()
        on_training()
        # on the way out: the trackers' queues, then the save in flight and the saver's group
        with closing(runner.checkpointer), runner.logger.tracking(hparams(cfg)):
            profiling = (
                debug.profiler(run_dir / "profile", runner) if cfg.runner.profile else nullcontext()
            )
            with profiling, debug.anomaly(cfg.runner.detect_anomaly):
                runner.fit(data.train, data.val)
            results = debug.overfit_report(runner, data.train) if cfg.runner.overfit_batches else {}
            results |= runner.test(data.test)
            results |= run_summary(runner, cfg, data.train) | (tags or {})
            runner.logger.log_results(results, runner.state.step)
        if world.is_main:
            records.join()
            write_results(run_dir, results)
    barrier(world)  # leave together: a rank closing its sockets early can abort a busy peer
    return results


def set_up(
    cfg: DictConfig,
    task: Task,
    trackers: list[Tracker],
    run_dir: Path,
    world: World,
    device: torch.device,
    started: float,
    callbacks: Sequence[Callback] = (),
) -> tuple[Runner, Loaders]:
    """Everything before training: ranks, data, the checkpoint to resume, the runner."""
    init_distributed(world, device)
    seed_everything(cfg.seed)
    plan = resume_plan(cfg, run_dir, device)  # a changed run is refused before data preparation
    # The trackers import on their own threads while the data loads; a resumed run's trackers
    # reopen the runs its checkpoint names.
    resumed = saved_run_ids(plan.payload.get("trackers")) if plan is not None else None
    columns = [*task.metric_names, "lr", "samples_per_s"]
    logger = MetricLogger(run_dir, columns, world.is_main, trackers, resumed)
    data = build.build_loaders(cfg, device, world)
    build.fill_from_data(cfg, data.info)
    if plan is not None:
        plan.check_data(data.info)
    if cfg.runner.overfit_batches > 0:
        data.train = debug.RepeatBatches(data.train, cfg.runner.overfit_batches)
    total_steps = build.check_trains(cfg, len(data.train))
    runner = build_runner(
        cfg, task, data, logger, run_dir, world, device, started, plan, total_steps
    )
    runner.callbacks += callbacks  # a sweep trial's pruning (it keeps no state to resume)
    if cfg.resume and plan is None:  # resume=auto found nothing here: this run starts over
        runner.logger.truncate_after(0)  # rows an attempt that never checkpointed left behind
    return runner, data


def build_runner(
    cfg: DictConfig,
    task: Task,
    data: Loaders,
    logger: MetricLogger,
    run_dir: Path,
    world: World,
    device: torch.device,
    started: float,
    plan: ResumePlan | None,
    total_steps: int,
) -> Runner:
    strategy = build_strategy(cfg.runner.strategy, OmegaConf.to_object(cfg.runner.fsdp), world)
    model = strategy.wrap(build.build_model(cfg, device), device)  # DDP, FSDP, or as it is
    callbacks = build.build_callbacks(cfg, unwrapped(model))  # on the bare model
    optimizer = build.build_optimizer(cfg, model)
    config = portable_config(cfg)
    schedule, exact = (
        plan.schedule(total_steps) if plan else (schedule_of(config, total_steps), True)
    )
    if plan is not None and not exact:  # the run's length or the optimizer settings changed
        log.info("resume: a new schedule over steps %d-%d", plan.step, total_steps)
        if plan.keeps_moments:
            load = partial(strategy.load_state, model, optimizer, plan.payload, str(plan.path))
            load_optimizer_moments(optimizer, load)
    extra = {"config": config, "data_info": data.info, "schedule": schedule}
    runner = Runner(
        model,
        optimizer,
        task,
        device,
        scheduler=build.build_scheduler(cfg, optimizer, total_steps - schedule["from_step"]),
        state=TrainState(),
        options=RunnerOptions(**{k: cfg.runner[k] for k in RunnerOptions.__dataclass_fields__}),
        checkpointer=strategy.checkpointer(
            run_dir / "checkpoints", cfg.runner.keep_last_k, cfg.runner.checkpoints
        ),
        logger=logger,
        progress=Progress(cfg.runner.progress, enabled=world.is_main),
        world=world,
        strategy=strategy,
        checkpoint_extra=extra | {"trackers": logger.run_ids},  # resumes continue tracker runs
        callbacks=callbacks,
        started=started,
    )
    if plan is not None:
        runner.load(plan.to_load(exact), source=str(plan.path))
        runner.logger.truncate_after(runner.state.step)
        log.info("Resumed from %s at epoch %d, step %d", plan.path, runner.state.epoch, plan.step)
    return runner


def portable_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain data, with paths made absolute so it works from anywhere."""
    config: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)  # type: ignore[assignment]
    for key in ("root", "path", "cache_dir"):
        if config["data"].get(key):
            config["data"][key] = str(Path(cfg.data[key]).resolve())
    return config


def resume_plan(cfg: DictConfig, run_dir: Path, device: torch.device) -> ResumePlan | None:
    """The checkpoint `resume=...` names, checked against this config (None: a fresh run)."""
    if not cfg.resume:
        return None
    path = locate_checkpoint(cfg.resume, cfg.output_root, str(run_dir))
    if path is None:
        return None
    payload = load_checkpoint(path, device)
    return plan_resume(path, payload, portable_config(cfg), cfg.allow_resume_changes)


def run_summary(runner: Runner, cfg: DictConfig, train_loader: Any) -> dict[str, Any]:
    state = runner.state
    return {
        f"best/{cfg.runner.monitor}": state.best_metric,
        "best/step": state.best_step,
        "epochs": round(runner.epochs_trained(train_loader), 4),
        "steps": state.step,
        "train_time_s": round(state.train_time_s, 3),
        "wall_time_s": round(runner.wall_clock.elapsed(), 3),
        "world_size": runner.world.world_size,
        "status": "pruned" if pruned(runner.callbacks) else "completed",
        **({"stop_reason": state.stop_reason} if state.stop_reason else {}),
    }


def hparams(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as flat `group.key` values, for TensorBoard's HPARAMS tab."""
    flat = flatten(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))
    return {k: v for k, v in flat.items() if not k.endswith("_partial_")}


@hydra.main(version_base="1.3", config_path="config", config_name="config")
def main(cfg: DictConfig) -> float:
    """Hydra's entry point; returns the monitored metric so sweepers can optimise it."""
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    # A resumed run keeps its first records; this process's go beside its .hydra/resume-* record.
    subdir = str(hydra_cfg.output_subdir)
    records_dir = run_dir / subdir if subdir.startswith(".hydra/resume-") else run_dir
    try:
        if hydra_cfg.mode == RunMode.MULTIRUN:  # skip a finished trial, record a failed one
            overrides = list(hydra_cfg.overrides.task)
            sweep_dir = Path(hydra_cfg.sweep.dir)
            trial = lambda tags: train(  # noqa: E731
                cfg,
                run_dir,
                tags=tags,
                sweep_dir=sweep_dir,
                callbacks=trial_callbacks(cfg.runner.monitor, hydra_cfg),
            )
            return run_trial(cfg, run_dir, overrides, trial)
        # A start that fails (bad input, a signal before training) leaves the folder as it was.
        with cli.one_line_errors(), UndoFailedStart() as start:
            results = train(cfg, run_dir, records_dir, on_training=start.training_began)
    finally:
        shutdown_distributed()
    return monitored_value(results, cfg.runner.monitor)


def run() -> None:
    """The command line: resume rewrites it first, and errors become one line."""
    torch.set_float32_matmul_precision("high")
    keep_freed_memory()  # no page faults for the memory each step frees and allocates again
    root = Config.output_root
    cli.run(
        main,
        rewrite_argv=lambda argv: resume_argv(
            elastic_restart(argv, root, run_stamp()), root, CONFIG_DIR
        ),
    )


if __name__ == "__main__":
    run()
