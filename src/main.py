"""Train a model: `python -m src.main [overrides]` (or `make run ARGS="..."`).

This file is the composition root: Hydra composes the config, `train` builds every object from
it and hands them to the Runner, which owns the loop. Nothing else imports this module.
"""

from __future__ import annotations

import logging
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from torch.nn.parallel import DistributedDataParallel

from src import build
from src.common.files import atomic_write_json
from src.config.schema import register_configs
from src.config.validate import check_config
from src.launch import cli
from src.launch.distributed import (
    World,
    barrier,
    init_distributed,
    resolve_device,
    shutdown_distributed,
    world_from_env,
)
from src.launch.run_stamp import register_run_stamp
from src.launch.signals import StopRequest
from src.launch.slurm import requeue_if_preempted
from src.reporting.logger import MetricLogger
from src.reporting.plots import plot_curves
from src.reporting.progress import Progress
from src.reporting.records import RecordWriter
from src.reporting.tensorboard import flatten
from src.runner import Runner, RunnerOptions, StopTraining
from src.sweep.trial import finished_results, monitored_value, trial_identity
from src.training import debug
from src.training.checkpoint import Checkpointer, load_checkpoint
from src.training.resume import locate_checkpoint
from src.training.state import TrainState, seed_everything

log = logging.getLogger(__name__)
register_configs()
register_run_stamp()


def train(
    cfg: DictConfig,
    run_dir: Path,
    records_dir: Path | None = None,
    tags: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Build everything from the config, fit, test; return the results written to results.json.

    `tags` are stored in results.json as they are (a sweep trial's identity, see src/sweep).
    """
    check_config(cfg)
    started = time.perf_counter()
    world = world_from_env()
    device = resolve_device(cfg.device, world)
    records = RecordWriter(records_dir or run_dir, device, enabled=world.is_main)
    init_distributed(world, device)
    seed_everything(cfg.seed)
    loaders = build.build_loaders(cfg, device, world)
    if cfg.runner.overfit_batches > 0:
        loaders.train = debug.RepeatBatches(loaders.train, cfg.runner.overfit_batches)
    runner = build_runner(cfg, run_dir, world, device, len(loaders.train))
    try:
        resume_from(cfg, runner, run_dir)
        profiling = (
            debug.profiler(run_dir / "profile", runner) if cfg.runner.profile else nullcontext()
        )
        with StopRequest() as runner.stop, profiling, debug.anomaly(cfg.runner.detect_anomaly):
            runner.fit(loaders.train, loaders.val)
        results = overfit_report(runner, loaders.train) if cfg.runner.overfit_batches > 0 else {}
        results |= {**runner.test(loaders.test), **summary(runner, cfg, started), **(tags or {})}
        runner.logger.log_hparams(hparams(cfg), final_metrics(results), runner.state.step)
    finally:
        runner.logger.close()  # waits for TensorBoard's thread to write what is queued
    if world.is_main:
        records.join()
        finish_run_dir(run_dir, results)
    barrier(world)  # leave together: a rank closing its sockets early can abort a busy peer
    return results


def build_runner(
    cfg: DictConfig, run_dir: Path, world: World, device: torch.device, batches_per_epoch: int
) -> Runner:
    model = build.build_model(cfg, device)
    if world.is_distributed:
        model = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    optimizer = build.build_optimizer(cfg, model)
    checkpoints = world.is_main and cfg.runner.checkpoints
    return Runner(
        model,
        optimizer,
        build.build_criterion(cfg),
        device,
        scheduler=build.build_scheduler(cfg, optimizer, batches_per_epoch),
        state=TrainState(),
        options=RunnerOptions(**{k: cfg.runner[k] for k in RunnerOptions.__dataclass_fields__}),
        checkpointer=Checkpointer(run_dir / "checkpoints", cfg.runner.keep_last_k, checkpoints),
        logger=MetricLogger(run_dir, enabled=world.is_main),
        progress=Progress(cfg.runner.progress, enabled=world.is_main),
        world=world,
        checkpoint_extra={"config": portable_config(cfg)},
    )


def overfit_report(runner: Runner, batches: Any) -> dict[str, Any]:
    """Loss and accuracy on the repeated batches after training: both should be near perfect."""
    batches.set_epoch(0)
    metrics = runner.evaluate(batches, "overfit")
    log.info(
        "overfit: loss %.4g, accuracy %.4f on the %d repeated batches (%d samples)",
        metrics["overfit/loss"],
        metrics["overfit/acc"],
        len(batches),
        metrics["overfit/samples"],
    )
    return metrics


def portable_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain data, with paths made absolute so it works from anywhere."""
    config: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    if "root" in config["data"]:
        config["data"]["root"] = str(Path(cfg.data.root).resolve())
    return config


def resume_from(cfg: DictConfig, runner: Runner, run_dir: Path) -> None:
    if not cfg.resume:
        return
    path = locate_checkpoint(cfg.resume, cfg.output_root, str(run_dir))
    if path is None:
        return
    runner.load(load_checkpoint(path, runner.device), source=str(path))
    runner.logger.truncate_after(runner.state.step)
    log.info("Resumed from %s at epoch %d, step %d", path, runner.state.epoch, runner.state.step)


def summary(runner: Runner, cfg: DictConfig, started: float) -> dict[str, Any]:
    state = runner.state
    return {
        f"best/{cfg.runner.monitor}": state.best_metric,
        "best/step": state.best_step,
        "epochs": state.epoch,
        "steps": state.step,
        "train_time_s": round(state.train_time_s, 3),
        "wall_time_s": round(time.perf_counter() - started, 3),
        "world_size": runner.world.world_size,
        "status": "completed",
    }


def hparams(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as flat `group.key` values, for TensorBoard's HPARAMS tab."""
    flat = flatten(OmegaConf.to_container(cfg, resolve=True))
    return {k: v for k, v in flat.items() if not k.endswith("_partial_")}


def final_metrics(results: dict[str, Any]) -> dict[str, Any]:
    """The numbers TensorBoard shows beside the hyperparameters: test and best validation."""
    return {k: v for k, v in results.items() if k.startswith(("test/", "best/val/"))}


def finish_run_dir(run_dir: Path, results: dict[str, Any]) -> None:
    atomic_write_json(run_dir / "results.json", results)
    if (run_dir / "metrics.csv").exists():
        plot_curves(run_dir / "metrics.csv", run_dir / "curves.png")
    log.info("test/acc %.4f  test/loss %.4f", results["test/acc"], results["test/loss"])
    print(f"test accuracy {results['test/acc']:.4f}  run directory {run_dir}")


@hydra.main(version_base="1.3", config_path="config", config_name="config")
def main(cfg: DictConfig) -> float:
    """Hydra's entry point; returns the monitored metric so sweepers can optimise it.

    In a sweep (multirun) a trial that already completed in its folder is not run again, and a
    trial that fails in any way is recorded in its results.json while the sweep goes on.
    """
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    # A resumed run keeps its first records; this process's go beside its .hydra/resume-* record.
    records_dir = run_dir / str(hydra_cfg.output_subdir) if cfg.resume else run_dir
    sweeping = hydra_cfg.mode == RunMode.MULTIRUN
    trial = trial_identity(cfg, list(hydra_cfg.overrides.task)) if sweeping else {}
    done = finished_results(run_dir, trial) if sweeping else None
    if done is not None:
        log.info("trial already completed in %s (results.json); not run again", run_dir)
        return monitored_value(done, cfg.runner.monitor)
    try:
        results = train(cfg, run_dir, records_dir, tags=trial)
    except Exception as err:
        if not sweeping:
            if isinstance(err, StopTraining):  # SLURM's warning signal: back in the queue
                requeue_if_preempted(err.exit_code, world_from_env())
            if isinstance(err, (StopTraining, *cli.USER_ERRORS)):
                cli.exit_with(err)  # one line and a non-zero exit, no traceback
            raise  # a bug: the full traceback
        stopped = isinstance(err, StopTraining) and err.exit_code >= 128
        record_failure(run_dir, err, trial, "stopped" if stopped else "failed")
        if stopped:  # a signal (Ctrl-C, SIGTERM) ends the whole sweep, not just this trial
            cli.exit_with(err)  # SystemExit: Hydra's launchers pass it through
        return float("nan")  # the sweep records it and goes on
    finally:
        shutdown_distributed()
    return monitored_value(results, cfg.runner.monitor)


def record_failure(run_dir: Path, err: Exception, trial: dict[str, Any], status: str) -> None:
    """results.json says why the trial ended; a bug's traceback goes to main.log as well."""
    user_error = isinstance(err, (StopTraining, *cli.USER_ERRORS))
    message = cli.one_line(err) if user_error else f"{type(err).__name__}: {cli.one_line(err)}"
    log.error("trial %s: %s", status, message, exc_info=not user_error)
    results = {"status": status, "error": message, **trial}
    atomic_write_json(run_dir / "results.json", results)


if __name__ == "__main__":
    torch.set_float32_matmul_precision("high")
    cli.run(main)
