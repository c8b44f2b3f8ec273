"""The training loop. Everything it uses is built elsewhere (`main.py`) and handed in.

    for epoch in range(state.epoch, max_epochs):
        for batch in train_loader (from state.batch_in_epoch):
            loss, outputs = task.loss(model, batch)      # under autocast when precision asks
            backward; task metrics and the loss join the window (on the device)
            every accumulate_grad_batches: clip, optimizer.step, scheduler.step, state.step += 1
            every log_every_n_steps: read the window back, log it, update the bars
            every checkpoint_every_n_steps: write last.pt
            stop early on max_steps or a stop signal (after writing last.pt)
        validate -> log, best.pt when the monitored metric improves, last.pt
            (a stop signal mid-validation: last.pt as before validation, then stop)
    test (separately, `Runner.test`) with the best or the last weights

Callbacks (src/training/callbacks.py) join at fixed points: after each optimizer step, after
each validation, and around evaluation (EMA weights, early stopping, the profiler).
What is specific to a problem (the loss, the metrics and their names, what a batch holds) is the
task's (src/task/); the Runner never names a metric. It imports nothing from Hydra or the config.
"""

from __future__ import annotations

import logging
import math
from contextlib import ExitStack, nullcontext
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

import torch
from torch import nn

from src.launch.distributed import World, any_rank, barrier
from src.launch.signals import EvaluationStopped, StopRequest, StopTraining
from src.reporting.logger import MetricLogger
from src.reporting.progress import Progress, Throughput
from src.task.base import Task
from src.training import snapshot
from src.training.callbacks import Callback
from src.training.checkpoint import Checkpointer
from src.training.loss_window import nonfinite_stop
from src.training.options import NonFinite, RunnerOptions, TestWeights, better, epoch_length
from src.training.precision import MixedPrecision
from src.training.state import Stopwatch, TrainState
from src.training.strategy import Replicated

log = logging.getLogger(__name__)
_NO_CONTEXT = nullcontext()  # reusable, and cheaper than building one per step


@dataclass(eq=False)
class Runner:
    """The loop over plain objects: a model (maybe wrapped in DDP or compiled), its optimizer,
    the task, the device; everything after `*` has a default that records and saves nothing."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    task: Task
    device: torch.device
    _: KW_ONLY
    scheduler: Any = None  # stepped after every optimizer step
    state: TrainState = field(default_factory=TrainState)  # counters: what a checkpoint resumes
    options: RunnerOptions = field(default_factory=RunnerOptions)  # how long, how often
    checkpointer: Checkpointer = field(default_factory=lambda: Checkpointer(".", enabled=False))
    logger: MetricLogger = field(default_factory=lambda: MetricLogger(".", enabled=False))
    progress: Progress = field(default_factory=lambda: Progress("none"))
    world: World = field(default_factory=World)  # rank and world size (1 process by default)
    strategy: Replicated = field(default_factory=Replicated)  # or Sharded (FSDP); wraps nothing
    stop: StopRequest = field(default_factory=StopRequest)  # set by signals, read between steps
    checkpoint_extra: dict[str, Any] = field(default_factory=dict)  # e.g. the resolved config
    callbacks: list[Callback] = field(default_factory=list)  # EMA, early stopping, profiler
    started: float | None = None  # perf_counter() when the process began (for wall time)

    def __post_init__(self) -> None:
        # Evaluation runs each rank on its own shard: through the model without its DDP wrapper.
        self.local_model = getattr(self.model, "module", self.model)
        # Checkpoints hold plain parameter names: the model without torch.compile's wrapper too.
        self.plain_model = getattr(self.local_model, "_orig_mod", self.local_model)
        self.window = self.task.metrics()  # the training metrics since the last logging step
        self.window_losses: list[torch.Tensor] = []  # per batch: which one went non-finite
        self.precision = MixedPrecision(self.device, self.options.precision)
        self.throughput = Throughput(self.state.samples_seen)
        self.fit_clock = Stopwatch(self.state.train_time_s)  # time in fit(), over all segments
        self.wall_clock = Stopwatch(self.state.wall_time_s, self.started)  # since process start

    # ----------------------------------------------------------------------------- training
    def fit(self, train_loader: Any, val_loader: Any) -> None:
        state, options = self.state, self.options
        self.fit_clock = Stopwatch(state.train_time_s)
        self.progress.start(options.max_epochs, state.epoch)
        try:
            while not self._done():
                self._train_epoch(train_loader)
                if self.stop.agreed(self.world, self.device):
                    self._stop()
                self._log_train()
                try:
                    self._end_of_epoch(val_loader, self._epoch_length(train_loader))
                except EvaluationStopped:  # the counters still say "before validation"
                    self._stop(" before validation (a resume validates again)")
        finally:
            self.progress.close()
            self.checkpointer.wait()  # also on the way out of an error: what was saved is on disk
        if not state.finished:  # nothing left to train (e.g. max_epochs=0): record that anyway
            state.finished = True
            self._save_checkpoint()
        self.checkpointer.wait()

    def _train_epoch(self, loader: Any) -> None:
        state, options = self.state, self.options
        length = self._epoch_length(loader)
        if hasattr(loader, "set_epoch"):  # the order of a seeded loader: (seed, epoch)
            loader.set_epoch(state.epoch, state.batch_in_epoch)
        self.model.train()
        self.progress.start_epoch(state.epoch, length, state.batch_in_epoch)
        for batch in loader:
            if state.batch_in_epoch >= length:
                break
            stepped = self._train_batch(batch, last=state.batch_in_epoch + 1 >= length)
            state.batch_in_epoch += 1
            self.progress.advance()
            if not stepped:
                continue
            for callback in self.callbacks:
                callback.on_step_end(self)
            if state.step % options.log_every_n_steps == 0:
                self._log_train()
            every = options.checkpoint_every_n_steps
            if every > 0 and state.step % every == 0:
                self._save_checkpoint()
            if self.stop.agreed(self.world, self.device) or self._reached_max_steps():
                return

    def _train_batch(self, batch: Any, last: bool = False) -> bool:
        """Forward and backward one batch; step when accumulation completes or the epoch ends."""
        state, accumulate = self.state, self.options.accumulate_grad_batches
        boundary = last or accumulate == 1 or (state.batch_in_epoch + 1) % accumulate == 0
        batch = self.task.to_device(batch, self.device)
        with self.precision.autocast():
            loss, outputs = self.task.loss(self.model, batch)
        detached, samples = loss.detach(), self.task.batch_size(batch)
        self.window.update(detached, outputs, batch, samples)
        self.window_losses.append(detached)
        state.samples_seen += samples * self.world.world_size
        # skip mode: every rank skips the same batch, or DDP's gradient all-reduce would hang
        if self.options.on_nonfinite == NonFinite.skip and any_rank(
            ~torch.isfinite(detached), self.world
        ):
            log.warning("skipping batch %d: non-finite loss", state.batch_in_epoch)
            self.optimizer.zero_grad(set_to_none=True)
            return False
        if accumulate > 1:
            loss = loss / accumulate
        no_sync = None if boundary else self.strategy.no_sync(self.model)  # no mid-way reduce
        with no_sync or _NO_CONTEXT:
            self.precision.backward(loss)
        if boundary:
            self._optimizer_step()
        return boundary

    def _optimizer_step(self) -> None:
        self.precision.step(self.optimizer, self.model, self.options.gradient_clip_val)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scheduler is not None:
            self.scheduler.step()
        self.state.step += 1

    # ------------------------------------------------------------------------------ logging
    def _log_train(self) -> None:
        """Read the window back from the device: the only host sync of a logging step."""
        if len(self.window) == 0:
            return
        state = self.state
        metrics = self.window.compute()
        if not math.isfinite(metrics["loss"]):
            self._check_finite()  # stop mode: names the batch and raises
        self.window.reset()
        self.window_losses = []
        metrics.pop("samples", None)
        metrics["lr"] = self.optimizer.param_groups[0]["lr"]
        metrics["samples_per_s"] = self.throughput.rate(state.samples_seen)
        self.logger.log("train", state.step, state.epoch, metrics)
        self.progress.show(state.step, state.epoch, metrics)

    def _check_finite(self) -> None:
        """Raise StopTraining (exit 3) naming the first non-finite batch, unless skipping."""
        if self.options.on_nonfinite == NonFinite.skip:
            return
        accumulate, kept = self.options.accumulate_grad_batches, self.checkpointer.last
        error = nonfinite_stop(self.window_losses, self.world, self.state, accumulate, kept)
        if error is not None:
            raise error

    # --------------------------------------------------------------------------- evaluation
    def _end_of_epoch(self, loader: Any, epoch_length: int) -> None:
        """Validate; move the counters on if the epoch is complete; write last.pt (and best)."""
        state, options = self.state, self.options
        metrics = self.evaluate(loader, "val", options.limit_val_batches)
        row = {k.split("/", 1)[1]: v for k, v in metrics.items()}
        self.logger.log("val", state.step, state.epoch, row)
        self.progress.end_epoch(state.epoch, metrics)
        if state.batch_in_epoch >= epoch_length:
            state.epoch, state.batch_in_epoch = state.epoch + 1, 0
        for callback in self.callbacks:
            callback.on_validation_end(self, metrics)  # early stopping sets state.stop_reason
        state.finished = self._done()
        value = metrics.get(options.monitor)
        improved = value is not None and better(value, state.best_metric, options.monitor_mode)
        if improved:
            state.best_metric, state.best_step = value, state.step
        self._save_checkpoint(is_best=improved)

    @torch.no_grad()
    def evaluate(
        self, loader: Any, split: str, limit: int = -1, callback_weights: bool = True
    ) -> dict[str, float]:
        """The task's metrics over the loader as `<split>/<name>`, each sample counted once
        across ranks; with the callbacks' evaluation weights (EMA) unless told otherwise. A stop
        signal ends it early (EvaluationStopped)."""
        was_training = self.local_model.training
        self.local_model.eval()
        meter = self.task.metrics()
        batches = epoch_length(len(loader), limit)
        polls = self.stop.evaluation_polls(batches, self.world, self.device)
        weights = ExitStack()  # FSDP gathers its shards here (src/training/strategy.py)
        weights.enter_context(self.strategy.evaluation(self.local_model))
        for callback in self.callbacks if callback_weights else []:
            weights.enter_context(callback.evaluation_weights(self))
        with weights:
            for i, batch in enumerate(loader):
                if 0 <= limit <= i:
                    break
                if i in polls and self.stop.agreed(self.world, self.device):
                    self.local_model.train(was_training)
                    raise self.stop.during(split)
                batch = self.task.to_device(batch, self.device)
                with self.precision.autocast():
                    loss, outputs = self.task.loss(self.local_model, batch)
                meter.update(loss.float(), outputs, batch, self.task.batch_size(batch))
        self.local_model.train(was_training)
        return {f"{split}/{name}": value for name, value in meter.compute().items()}

    def test(self, loader: Any) -> dict[str, float]:
        """Evaluate on the test set with the weights `test_ckpt` names (best.pt when it exists)."""
        self.checkpointer.wait()
        best = self.checkpointer.best
        barrier(self.world)  # rank 0 has finished writing best.pt before any rank reads it
        limit, own_weights = self.options.limit_test_batches, True
        if self.options.test_ckpt == TestWeights.best and best.exists():
            self.strategy.load_evaluation_weights(self.plain_model, best)
            own_weights = False
        try:
            return self.evaluate(loader, "test", limit, callback_weights=own_weights)
        except EvaluationStopped as stopped:  # training had finished: last.pt holds it all
            message = f"{stopped}; training had finished: resume the run to test again"
            raise StopTraining(message, stopped.exit_code) from None

    # ---------------------------------------------------------------------------- checkpoints
    def checkpoint(self) -> dict[str, Any]:
        """The whole training state (src/training/snapshot.py), with `checkpoint_extra`."""
        return snapshot.capture(self)

    def load(self, payload: dict[str, Any], source: str = "checkpoint") -> None:
        snapshot.restore(self, payload, source)
        self.throughput = Throughput(self.state.samples_seen)
        self.wall_clock.carried = self.state.wall_time_s  # the earlier segments' seconds

    def _save_checkpoint(self, is_best: bool = False) -> None:
        """Write last.pt (and best.pt), after making sure no non-finite loss slipped in: on
        every rank (a collective under DDP), so a diverged model never overwrites a good one."""
        self._check_finite()
        state = self.state
        state.train_time_s, state.wall_time_s = self.fit_clock.elapsed(), self.wall_clock.elapsed()
        if self.checkpointer.enabled:
            self.checkpointer.save(self.checkpoint(), state.step, is_best)

    # ------------------------------------------------------------------------------ helpers
    def epochs_trained(self, train_loader: Any) -> float:
        """Whole epochs plus the fraction of the current one (a max_steps run stops mid-way)."""
        length = self._epoch_length(train_loader)
        return self.state.epoch + (self.state.batch_in_epoch / length if length else 0.0)

    def _epoch_length(self, loader: Any) -> int:
        return epoch_length(len(loader), self.options.limit_train_batches)

    def _reached_max_steps(self) -> bool:
        return 0 <= self.options.max_steps <= self.state.step

    def _done(self) -> bool:
        """max_epochs, max_steps, or a callback's reason (early stopping) ends training."""
        ended = self.state.epoch >= self.options.max_epochs or self._reached_max_steps()
        return ended or bool(self.state.stop_reason)

    def _stop(self, when: str = "") -> None:
        """Write last.pt and end the run with 128 + the signal number."""
        self._save_checkpoint()
        self.checkpointer.wait()
        barrier(self.world)  # every rank's save is over (its collectives too) before any leaves
        saved = self.checkpointer.last if self.checkpointer.enabled else "nowhere"
        message = f"stopped by signal {self.stop.signum} at step {self.state.step}{when}"
        raise StopTraining(f"{message}; saved {saved}", self.stop.exit_code)
