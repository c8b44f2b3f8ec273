"""TensorBoard event files in the run directory, written from a background thread.

Importing `torch.utils.tensorboard` costs about 1.5 s, so the import happens in the thread,
overlapping with data loading and the first steps. The training loop only puts a small dict on a
queue at logging steps; it never waits for the import or the disk. The thread flushes whenever it
has caught up, so the files are complete even if `close` is never reached.
"""

from __future__ import annotations

import logging
import queue
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class TensorBoardWriter:
    def __init__(self, log_dir: str | Path) -> None:
        self.log_dir = Path(log_dir)
        self._queue: queue.SimpleQueue[tuple[str, Any] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name="tensorboard", daemon=True)
        self._thread.start()

    def scalars(self, prefix: str, step: int, values: dict[str, float]) -> None:
        """Log `<prefix>/<name>` for every number in `values` at `step`."""
        numbers = {f"{prefix}/{k}": float(v) for k, v in values.items() if _is_number(v)}
        self._queue.put(("scalars", (step, numbers)))

    def hparams(self, hparams: dict[str, Any], metrics: dict[str, Any], step: int) -> None:
        """The run's hyperparameters with its final metrics (the HPARAMS tab compares runs)."""
        numbers = {k: float(v) for k, v in metrics.items() if _is_number(v)}
        self._queue.put(("hparams", (step, {k: _hparam(v) for k, v in hparams.items()}, numbers)))

    def purge_after(self, step: int) -> None:
        """On resume: tell TensorBoard to drop events logged after `step` by the earlier run."""
        self._queue.put(("purge", step + 1))

    def close(self, timeout: float = 30.0) -> None:
        """Write everything queued and close the file (waits for the import if still running)."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout)

    # ------------------------------------------------------------------- background thread
    def _work(self) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
            from torch.utils.tensorboard.summary import hparams as hparams_summary
        except Exception as err:  # a broken install must not stop training
            log.warning("TensorBoard logging disabled: %s", err)
            while self._queue.get() is not None:
                pass
            return
        writer: Any = None
        purge_step: int | None = None
        while (item := self._queue.get()) is not None:
            kind, payload = item
            if kind == "purge":
                purge_step = payload
                continue
            if writer is None:
                writer = SummaryWriter(str(self.log_dir), purge_step=purge_step)
            if kind == "scalars":
                step, numbers = payload
                for tag, value in numbers.items():
                    writer.add_scalar(tag, value, step)
            else:
                step, hparams, metrics = payload
                for summary in hparams_summary(hparams, metrics):
                    writer.file_writer.add_summary(summary, step)
                for tag, value in metrics.items():
                    writer.add_scalar(tag, value, step)
            if self._queue.empty():
                writer.flush()
        if writer is not None:
            writer.close()


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _hparam(value: Any) -> bool | int | float | str:
    """TensorBoard takes bools, numbers and strings; anything else (lists, None) as text."""
    return value if isinstance(value, bool | int | float | str) else str(value)


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{'optimizer': {'lr': 0.01}} -> {'optimizer.lr': 0.01}; lists stay whole values."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


if __name__ == "__main__":
    import tempfile

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with tempfile.TemporaryDirectory() as tmp:
        tb = TensorBoardWriter(tmp)
        for step in range(1, 4):
            tb.scalars("train", step, {"loss": 1.0 / step, "acc": 0.3 * step})
        tb.hparams(flatten({"optimizer": {"lr": 0.01, "betas": [0.9, 0.99]}}), {"test/acc": 0.9}, 3)
        tb.close()
        events = EventAccumulator(tmp)
        events.Reload()
        print(events.Tags()["scalars"])
