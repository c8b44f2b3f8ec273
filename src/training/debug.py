"""Debug switches that wrap a run without changing the loop (`debug=...`, src/config/debug/).

- `RepeatBatches`: the same few training batches every epoch (`runner.overfit_batches`). A model
  that cannot drive their loss to ~0 has a bug: a wrong loss, a detached graph, a frozen layer.
  `overfit_report` evaluates them after training.
- `profiler`: torch.profiler over a few optimizer steps, stepped by a callback after each
  optimizer step; the trace lands in `<run>/profile/` (`runner.profile`).
- `anomaly`: autograd anomaly detection (`runner.detect_anomaly`): a NaN made in backward
  raises at once, with the traceback of the forward operation that caused it.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile, schedule

from src.common.files import atomic_path, atomic_write_bytes
from src.reporting.results import final_line
from src.training.callbacks import OnStepEnd

log = logging.getLogger(__name__)

# Skip the first step (lazy initialisation), warm up on the next, then record three.
PROFILE_SCHEDULE = {"wait": 1, "warmup": 1, "active": 3, "repeat": 1}


class RepeatBatches:
    """The first `n` batches of the loader's epoch 0, served again every epoch.

    The batches are cut once and kept (already collated, on the device), so every epoch sees
    exactly the same samples; `set_epoch` only moves the start for a mid-epoch resume.
    """

    def __init__(self, loader: Any, n: int) -> None:
        if hasattr(loader, "set_epoch"):  # a seeded loader; a plain DataLoader has its own order
            loader.set_epoch(0)
        self.batches = list(itertools.islice(iter(loader), n))
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.start_batch = start_batch

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[Any]:
        yield from self.batches[self.start_batch :]


def overfit_report(runner: Any, batches: RepeatBatches) -> dict[str, Any]:
    """The task's metrics on the repeated batches after training: they should be near perfect."""
    batches.set_epoch(0)
    metrics = runner.evaluate(batches, "overfit")
    shown = final_line(metrics, prefix="overfit/").replace("overfit/", "")
    log.info("overfit: %s on the %d repeated batches", shown, len(batches))
    return metrics


@contextmanager
def profiler(folder: Path, runner: Any) -> Iterator[None]:
    """Profile a few optimizer steps of whatever runs inside; write the trace and a summary."""
    folder.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # quiet the profiler's C++ warnings
    trace = folder / "trace.json"
    activities = [ProfilerActivity.CPU]
    if runner.device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)

    def on_ready(prof: profile) -> None:
        with atomic_path(trace) as partial:  # a stop mid-write leaves no half trace
            prof.export_chrome_trace(str(partial))
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20)
        atomic_write_bytes(folder / "summary.txt", (table + "\n").encode())

    with profile(
        activities=activities,
        schedule=schedule(**PROFILE_SCHEDULE),
        on_trace_ready=on_ready,
        record_shapes=True,
    ) as prof:
        step = OnStepEnd(lambda _: prof.step())
        runner.callbacks.append(step)
        try:
            yield
        finally:
            runner.callbacks.remove(step)
    if trace.is_file():
        log.info(
            "profiler trace %s: open it in https://ui.perfetto.dev or chrome://tracing "
            "(slowest ops in %s)",
            trace,
            folder / "summary.txt",
        )
    else:
        steps = PROFILE_SCHEDULE
        needed = steps["wait"] + steps["warmup"] + steps["active"]
        log.warning("no profiler trace: the run took fewer than %d optimizer steps", needed)


@contextmanager
def anomaly(enabled: bool) -> Iterator[None]:
    """Autograd anomaly detection inside the block when enabled (off again afterwards)."""
    if not enabled:
        yield
        return
    log.warning("autograd anomaly detection on: training is slower; NaNs in backward raise")
    with torch.autograd.set_detect_anomaly(True):
        yield


if __name__ == "__main__":
    import tempfile
    from types import SimpleNamespace

    from src.data.in_memory import InMemoryLoader

    logging.basicConfig(level=logging.INFO)
    x, y = torch.arange(10).float(), torch.arange(10)
    batches = RepeatBatches(InMemoryLoader(x, y, 2, lambda a, b: b, shuffle=True), 2)
    print("overfit batches, every epoch:", [b.tolist() for b in batches])
    fake = SimpleNamespace(device=torch.device("cpu"), callbacks=[])
    with tempfile.TemporaryDirectory() as tmp, profiler(Path(tmp), fake):
        for _ in range(6):
            torch.randn(64, 64) @ torch.randn(64, 64)
            for callback in fake.callbacks:
                callback.on_step_end(fake)
