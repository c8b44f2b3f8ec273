"""Turn SIGINT, SIGTERM and SIGUSR1 into a flag the training loop reads between steps.

`src/main.py` installs the handlers for the whole of a run. While there is nothing to save yet
(config checks, data preparation, building the model) a signal stops the process at once by
raising `Interrupted` from the handler: temporary files are removed on the way out. Once the
loop runs (`defer()`), a signal only sets the flag: the loop finishes its step or evaluation
batch, writes last.pt and exits. Either way the exit code is 128 + the signal number (130
Ctrl-C, 143 SIGTERM, 138 SIGUSR1, SLURM's pre-emption warning). A second Ctrl-C aborts at once,
for when even one more step is too long to wait.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

import torch

from src.launch.distributed import World, all_reduce_min, any_rank

HANDLED = ("SIGINT", "SIGTERM", "SIGUSR1")
EVAL_POLL_EVERY = 8  # under DDP, an evaluation reads the flag (an all-reduce) this often


class StopTraining(Exception):
    """Raised out of `Runner.fit` when a run must end early; `exit_code` is what the process
    returns (128 + signal number, or 3 for a non-finite loss)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class EvaluationStopped(StopTraining):
    """A stop signal arrived during an evaluation; raised on every rank at the same batch."""


class Interrupted(BaseException):
    """Raised by the signal handler itself: where there is nothing to save, or on a second
    Ctrl-C. A BaseException, like KeyboardInterrupt, so no `except Exception` swallows it (a
    download route would move on to the next one); `with` blocks and `finally` still run."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class StopRequest:
    """The stop flag. `immediate=True` (until `defer()`) makes a signal raise `Interrupted`."""

    def __init__(self, immediate: bool = False) -> None:
        self.signum: int | None = None
        self.immediate = immediate
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def exit_code(self) -> int:
        return 128 + (self.signum or 0)

    def request(self, signum: int) -> None:
        self.signum = signum

    def request_like_sigterm(self) -> None:
        """Another rank was signalled: stop as SIGTERM would (exit 143)."""
        self.signum = signal.SIGTERM

    def defer(self) -> None:
        """From now on a signal only sets the flag, for the loop to act on at a safe point."""
        self.immediate = False

    def agreed(self, world: World, device: torch.device) -> bool:
        """Whether to stop, the same answer on every rank (under DDP the flag is summed over
        ranks, so all stop at the same step). The answer is the sum's, never the flag read again:
        a signal that lands during the all-reduce counts at the next agreement, or this rank
        would stop while the others train on, each waiting in a different collective."""
        if not world.is_distributed:
            return self.requested
        stop = any_rank(torch.tensor(self.requested, device=device), world)
        if stop and not self.requested:
            self.request_like_sigterm()  # another rank was signalled
        return stop

    def during(self, split: str) -> EvaluationStopped:
        """What an evaluation raises when the flag is set."""
        return EvaluationStopped(f"stopped by signal {self.signum} during {split}", self.exit_code)

    def evaluation_polls(self, batches: int, world: World, device: torch.device) -> range:
        """The evaluation batches at whose start the flag is read: every one in one process (an
        attribute read); under DDP, where each read is a collective, every EVAL_POLL_EVERY and
        only those all ranks have (evaluation shards may differ by a batch)."""
        if not world.is_distributed:
            return range(batches)
        return range(0, all_reduce_min(batches, world, device), EVAL_POLL_EVERY)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise Interrupted("aborted by a second Ctrl-C (nothing more saved)", 130)
        self.signum = signum
        if self.immediate:
            raise Interrupted(f"stopped by signal {signum} before training began", 128 + signum)

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for name in HANDLED:
                if hasattr(signal, name):
                    num = getattr(signal, name)
                    self._previous[num] = signal.signal(num, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for num, handler in self._previous.items():
            signal.signal(num, handler)
        self._previous.clear()


if __name__ == "__main__":
    import os

    with StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        print("stop requested:", stop.requested, "exit code:", stop.exit_code)
