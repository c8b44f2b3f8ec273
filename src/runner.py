"""The training loop. Everything it uses is built elsewhere (`main.py`) and handed in.

    for epoch in range(state.epoch, max_epochs):
        for batch in train_loader (from state.batch_in_epoch):
            forward, loss, backward                      # under autocast when precision asks
            every accumulate_grad_batches: clip, optimizer.step, scheduler.step, state.step += 1
            every log_every_n_steps: read metrics back, log them, update the bars
            every checkpoint_every_n_steps: write last.pt
            stop early on max_steps or a stop signal (after writing last.pt)
        validate -> log, best.pt when the monitored metric improves, last.pt
    test (separately, `Runner.test`) with the best or the last weights

The Runner imports nothing from Hydra or the config: it sees plain PyTorch objects.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from src.launch.distributed import World, any_rank, barrier
from src.launch.signals import StopRequest, StopTraining
from src.reporting.logger import MetricLogger
from src.reporting.progress import Progress
from src.training.checkpoint import Checkpointer, load_checkpoint, load_model_weights
from src.training.metrics import SumMeter, WindowMeter
from src.training.precision import autocast, grad_scaler
from src.training.state import TrainState, capture_rng, restore_rng

log = logging.getLogger(__name__)
_NO_CONTEXT = nullcontext()  # reusable, and cheaper than building one per step


@dataclass
class RunnerOptions:
    """How long to run and how often to look; see src/config/schema.py for each meaning."""

    max_epochs: int = 2
    max_steps: int = -1
    log_every_n_steps: int = 50
    checkpoint_every_n_steps: int = 0
    monitor: str = "val/acc"
    monitor_mode: str = "max"
    on_nonfinite: str = "stop"
    test_ckpt: str = "best"
    limit_train_batches: int = -1
    limit_val_batches: int = -1
    limit_test_batches: int = -1
    precision: str = "32"
    accumulate_grad_batches: int = 1
    gradient_clip_val: float = 0.0


class Runner:
    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        criterion: nn.Module,
        device: torch.device,
        *,
        scheduler: Any = None,
        state: TrainState | None = None,
        options: RunnerOptions | None = None,
        checkpointer: Checkpointer | None = None,
        logger: MetricLogger | None = None,
        progress: Progress | None = None,
        world: World | None = None,
        stop: StopRequest | None = None,
        checkpoint_extra: dict[str, Any] | None = None,
        on_step_end: list[Callable[[Runner], None]] | None = None,
    ) -> None:
        self.model, self.optimizer, self.criterion = model, optimizer, criterion
        self.device, self.scheduler = device, scheduler
        self.state = state or TrainState()
        self.opt = options or RunnerOptions()
        self.checkpointer = checkpointer or Checkpointer(".", enabled=False)
        self.logger = logger or MetricLogger(".", enabled=False)
        self.progress = progress or Progress("none")
        self.world = world or World()
        self.stop = stop or StopRequest()
        self.checkpoint_extra = checkpoint_extra or {}
        self.on_step_end = on_step_end or []  # the loop's one hook, after each optimizer step
        self.module = getattr(model, "module", model)  # the model inside a DDP wrapper
        self.bare = getattr(self.module, "_orig_mod", self.module)  # and inside torch.compile
        self.meter = WindowMeter(device)
        self.scaler = grad_scaler(device, self.opt.precision)
        self._last_log = (time.perf_counter(), self.state.samples_seen)
        self._started = (time.perf_counter(), self.state.train_time_s)

    # ----------------------------------------------------------------------------- training
    def fit(self, train_loader: Any, val_loader: Any) -> None:
        s, opt = self.state, self.opt
        self._started = (time.perf_counter(), s.train_time_s)
        self.progress.start(opt.max_epochs, s.epoch)
        try:
            while s.epoch < opt.max_epochs and not self._reached_max_steps():
                self._train_epoch(train_loader)
                if self._should_stop():
                    self._save()
                    self.checkpointer.wait()
                    raise StopTraining(self._stop_message(), self.stop.exit_code)
                self._validate_and_save(val_loader, self._epoch_length(train_loader))
        finally:
            self.progress.close()
            self.checkpointer.wait()  # also on the way out of an error: what was saved is on disk
        if not s.finished:  # nothing left to train (e.g. max_epochs=0): record that anyway
            s.finished = True
            self._save()
        self.checkpointer.wait()

    def _train_epoch(self, loader: Any) -> None:
        s, opt = self.state, self.opt
        length = self._epoch_length(loader)
        loader.set_epoch(s.epoch, s.batch_in_epoch)
        self.model.train()
        self.progress.start_epoch(s.epoch, length, s.batch_in_epoch)
        for batch in loader:
            if s.batch_in_epoch >= length:
                break
            stepped = self._train_batch(batch, last=s.batch_in_epoch + 1 >= length)
            s.batch_in_epoch += 1
            self.progress.advance()
            if not stepped:
                continue
            for hook in self.on_step_end:
                hook(self)
            if s.step % opt.log_every_n_steps == 0:
                self._log_train()
            if opt.checkpoint_every_n_steps > 0 and s.step % opt.checkpoint_every_n_steps == 0:
                self._save()
            if self._should_stop() or self._reached_max_steps():
                return

    def _train_batch(self, batch: Any, last: bool = False) -> bool:
        """Forward and backward one batch; step when accumulation completes or the epoch ends."""
        inputs, targets = batch
        s, accumulate = self.state, self.opt.accumulate_grad_batches
        boundary = last or accumulate == 1 or (s.batch_in_epoch + 1) % accumulate == 0
        with self._autocast():
            outputs = self.model(inputs)
            loss = self.criterion(outputs, targets)
        self.meter.update(loss, outputs, targets)
        s.samples_seen += len(targets) * self.world.world_size
        # skip mode: every rank skips the same batch, or DDP's gradient all-reduce would hang
        if self.opt.on_nonfinite == "skip" and any_rank(~torch.isfinite(loss.detach()), self.world):
            log.warning("skipping batch %d: non-finite loss", s.batch_in_epoch)
            self.optimizer.zero_grad(set_to_none=True)
            return False
        if accumulate > 1:
            loss = loss / accumulate
        no_sync = getattr(self.model, "no_sync", None)  # DDP: no all-reduce mid-accumulation
        with _NO_CONTEXT if boundary or no_sync is None else no_sync():
            (self.scaler.scale(loss) if self.scaler.is_enabled() else loss).backward()
        if boundary:
            self._optimizer_step()
        return boundary

    def _optimizer_step(self) -> None:
        if self.opt.gradient_clip_val > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.opt.gradient_clip_val)
        if self.scaler.is_enabled():
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.scheduler is not None:
            self.scheduler.step()
        self.state.step += 1

    def _autocast(self) -> Any:
        return (
            _NO_CONTEXT if self.opt.precision == "32" else autocast(self.device, self.opt.precision)
        )

    # ------------------------------------------------------------------------------ logging
    def _log_train(self) -> None:
        """Read the window back from the device (the only host sync of a logging step)."""
        if len(self.meter) == 0:
            return
        s = self.state
        window = self.meter.summarize(self.world)
        if window["nonfinite"]:
            self._check_finite()  # stop mode: names the batch and raises
        self.meter.reset()
        now = time.perf_counter()
        then, seen = self._last_log
        self._last_log = (now, s.samples_seen)
        metrics = {
            "loss": window["loss"],
            "acc": window["acc"],
            "lr": self.optimizer.param_groups[0]["lr"],
            "samples_per_s": (s.samples_seen - seen) / max(now - then, 1e-9),
        }
        self.logger.log("train", s.step, s.epoch, metrics)
        self.progress.show(s.step, s.epoch, metrics)

    def _check_finite(self) -> None:
        bad = self.meter.first_nonfinite(self.world)
        if bad is None or self.opt.on_nonfinite == "skip":
            return
        accumulate = self.opt.accumulate_grad_batches
        batch = self.state.batch_in_epoch - len(self.meter) + bad
        step = self.state.step - (len(self.meter) - bad - 1) // accumulate
        raise StopTraining(
            f"non-finite loss at step {step} (epoch {self.state.epoch}, batch {batch}); "
            f"last good checkpoint kept at {self.checkpointer.last}",
            exit_code=3,
        )

    # --------------------------------------------------------------------------- evaluation
    def _validate_and_save(self, loader: Any, epoch_length: int) -> None:
        """Validate, move the counters on if the epoch is complete, write last (and best).pt."""
        self._log_train()
        s, opt = self.state, self.opt
        metrics = self.evaluate(loader, "val", opt.limit_val_batches)
        self.logger.log("val", s.step, s.epoch, {k.split("/")[1]: v for k, v in metrics.items()})
        self.progress.end_epoch(s.epoch, metrics)
        if s.batch_in_epoch >= epoch_length:
            s.epoch, s.batch_in_epoch = s.epoch + 1, 0
        s.finished = s.epoch >= opt.max_epochs or self._reached_max_steps()
        value = metrics.get(opt.monitor)
        improved = value is not None and self._improved(value)
        if improved:
            s.best_metric, s.best_step = value, s.step
        self._save(is_best=improved)

    def _improved(self, value: float) -> bool:
        best = self.state.best_metric
        return best is None or (value > best if self.opt.monitor_mode == "max" else value < best)

    @torch.no_grad()
    def evaluate(self, loader: Any, split: str, limit: int = -1) -> dict[str, float]:
        """Loss, accuracy and sample count of the loader, each sample counted once across ranks."""
        was_training = self.module.training
        self.module.eval()
        meter = SumMeter(self.device)
        for i, (inputs, targets) in enumerate(loader):
            if 0 <= limit <= i:
                break
            with self._autocast():
                outputs = self.module(inputs)
                loss = self.criterion(outputs, targets)
            meter.update(loss.float(), outputs, targets)
        self.module.train(was_training)
        return meter.result(self.world, split)

    def test(self, loader: Any) -> dict[str, float]:
        """Evaluate on the test set with the weights `test_ckpt` names (best.pt when it exists)."""
        self.checkpointer.wait()
        best = self.checkpointer.best
        barrier(self.world)  # rank 0 has finished writing best.pt before any rank reads it
        if self.opt.test_ckpt == "best" and best.is_file():
            load_model_weights(self.bare, load_checkpoint(best, self.device)["model"], best)
        return self.evaluate(loader, "test", self.opt.limit_test_batches)

    # ---------------------------------------------------------------------------- checkpoints
    def checkpoint(self) -> dict[str, Any]:
        """The whole training state, with `checkpoint_extra` (e.g. the resolved config)."""
        return {
            "model": self.bare.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict(),
            "state": self.state.state_dict(),
            "meter": self.meter.state_dict(),
            "rng": capture_rng(),
            **self.checkpoint_extra,
        }

    def load(self, payload: dict[str, Any], source: str = "checkpoint") -> None:
        load_model_weights(self.bare, payload["model"], source)
        self.optimizer.load_state_dict(payload["optimizer"])
        if self.scheduler is not None and payload["scheduler"] is not None:
            self.scheduler.load_state_dict(payload["scheduler"])
        self.scaler.load_state_dict(payload["scaler"])
        self.state.load_state_dict(payload["state"])
        self.meter.load_state_dict(payload["meter"])
        restore_rng(payload["rng"])
        self._last_log = (time.perf_counter(), self.state.samples_seen)

    def _save(self, is_best: bool = False) -> None:
        s = self.state
        started, base = self._started
        s.train_time_s = base + time.perf_counter() - started
        self._check_finite()  # on every rank (a collective under DDP): a diverged model never
        if self.checkpointer.enabled:  # overwrites a good checkpoint
            self.checkpointer.save(self.checkpoint(), s.step, is_best)

    # ------------------------------------------------------------------------------ helpers
    def _epoch_length(self, loader: Any) -> int:
        limit = self.opt.limit_train_batches
        return len(loader) if limit < 0 else min(limit, len(loader))

    def _reached_max_steps(self) -> bool:
        return 0 <= self.opt.max_steps <= self.state.step

    def _should_stop(self) -> bool:
        """Under DDP every rank must stop at the same step, so the flag is summed over ranks."""
        if not self.world.is_distributed:
            return self.stop.requested
        flag = torch.tensor(self.stop.requested, device=self.device)
        if any_rank(flag, self.world) and not self.stop.requested:
            self.stop.request(15)  # another rank was signalled: stop like SIGTERM
        return self.stop.requested

    def _stop_message(self) -> str:
        where = self.checkpointer.last if self.checkpointer.enabled else "nowhere (checkpoints off)"
        return f"stopped by signal {self.stop.signum} at step {self.state.step}; saved {where}"
