"""Turn SIGINT, SIGTERM and SIGUSR1 into a flag the training loop reads between steps.

The loop then finishes its step, writes last.pt and exits with 128 + the signal number
(130 Ctrl-C, 143 SIGTERM, 138 SIGUSR1, SLURM's pre-emption warning). A second Ctrl-C aborts at
once, for when even one more step is too long to wait.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

HANDLED = ("SIGINT", "SIGTERM", "SIGUSR1")


class StopTraining(Exception):
    """Raised out of `Runner.fit` when a run must end early; `exit_code` is what the process
    returns (128 + signal number, or 3 for a non-finite loss)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class StopRequest:
    def __init__(self) -> None:
        self.signum: int | None = None
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

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: stop now
        self.signum = signum

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
