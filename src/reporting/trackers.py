"""Experiment trackers (TensorBoard, MLflow, W&B), each fed from a background thread of its own.

The training loop only puts a small tuple on a queue at logging steps: it never waits for a
tracker's import (1-3 s), its store, its disk or the network. Each tracker has its own thread,
so a slow one (W&B on a bad network) never holds up another. A tracker that fails is switched
off with one warning and the run goes on: trackers watch a run, they never stop it.

On its thread a tracker is driven in this order:

    prepare()                         imports, while the main thread loads the data
    open(params)                      once training begins: create the tracker's run, or reopen
                                      the one whose id a resumed checkpoint holds (`run_id`)
    scalars(step, values) ...         `<split>/<metric>` numbers, as metrics.csv rows
    results(results, step)            results.json's numbers at the end
    close(status)                     FINISHED | FAILED | KILLED

A start that fails before `open` creates no tracker run. The run ids go into every checkpoint
(`MetricLogger.run_ids`) so that a resumed run continues the same tracker run.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import queue
import re
import threading
from pathlib import Path
from typing import Any, ClassVar

from src.common.errors import UserError, one_line

log = logging.getLogger(__name__)
FINISHED, FAILED, KILLED = "FINISHED", "FAILED", "KILLED"  # how a run ended (MLflow's words)
CHECKPOINTS = ("best.pt", "last.pt")  # uploaded when a tracker's log_checkpoints is on
CLOSE_TIMEOUT_S = 60.0  # how long the end of a run waits for a tracker to send what is queued


class TrackerMissing(UserError):
    """A chosen tracker's package is not installed."""


class Tracker:
    """One experiment tracker. Every method but the constructor and `check` runs on the
    tracker's own thread; the constructor only stores its settings (no imports)."""

    name: ClassVar[str] = ""  # its option in the `logger` config group
    package: ClassVar[str] = ""  # the module it imports; checked before any work
    extra: ClassVar[str] = ""  # the project's extra that installs it ("": a core dependency)
    keeps_run: ClassVar[bool] = True  # has a run of its own, whose id checkpoints keep
    run_id: str = ""  # the tracker's run (empty: none yet); a resumed run sets it first
    resuming: bool = False  # set before `open` when the run resumes from a checkpoint

    def missing(self) -> str:
        """What must be installed and is not ("" when nothing is): checked before any work."""
        try:
            found = not self.package or importlib.util.find_spec(self.package) is not None
        except (ImportError, ValueError):  # a package that cannot be imported is as good as none
            found = False
        return "" if found else f"the {self.package} package"

    def new_run_id(self) -> str:
        """An id chosen before the run exists (W&B takes one); "" when the store assigns it."""
        return ""

    def prepare(self) -> None:
        """Import what `open` needs (slow): it overlaps with data loading."""

    def open(self, params: dict[str, Any]) -> None:
        """Start (or reopen, when `run_id` is set) the tracker's run; log the flat config."""

    def scalars(self, step: int, values: dict[str, float]) -> None:
        """`{'<split>/<metric>': value}` at `step`."""

    def results(self, results: dict[str, Any], step: int) -> None:
        """The run's results (results.json) as final metrics."""

    def purge_after(self, step: int) -> None:
        """On resume: what was logged after `step` will be logged again."""

    def close(self, status: str) -> None:
        """End the run (nothing to do when `open` never ran)."""


def check_installed(trackers: list[Tracker]) -> None:
    """One line naming every tracker whose package is missing, and the command that installs
    them all (each tracker but TensorBoard is an extra of the project: `.[mlflow]`)."""
    missing = [tracker for tracker in trackers if tracker.missing()]
    if not missing:
        return
    needs = "; ".join(f"logger={tracker.name} needs {tracker.missing()}" for tracker in missing)
    extras = ",".join(tracker.extra for tracker in missing if tracker.extra)
    raise TrackerMissing(f"{needs}: pip install -e " + (f"'.[{extras}]'" if extras else "."))


class TrackerThread:
    """A tracker behind a queue: `call` returns at once; the thread runs the calls in order.
    `ids[tracker.name]`, when present, follows the tracker's run id (checkpoints read it)."""

    def __init__(self, tracker: Tracker, ids: dict[str, str]) -> None:
        self.tracker, self.ids = tracker, ids
        self.opened = False
        self._queue: queue.SimpleQueue[tuple[str, tuple[Any, ...]] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name=tracker.name, daemon=True)
        self._thread.start()

    def call(self, method: str, *args: Any) -> None:
        self.opened |= method == "open"
        self._queue.put((method, args))

    def close(self, status: str, timeout: float = CLOSE_TIMEOUT_S) -> None:
        """Send what is queued and end the tracker's run; a tracker that never opened a run
        (a failed start) is left to finish its imports alone."""
        self._queue.put(("close", (status,)))
        self._queue.put(None)
        if self.opened:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning(
                    "logger=%s still busy after %.0f s: what it holds is lost", self.name, timeout
                )

    @property
    def name(self) -> str:
        return self.tracker.name

    def _work(self) -> None:
        working = self._run("prepare")
        while (item := self._queue.get()) is not None:
            method, args = item
            if working:
                working = self._run(method, *args)
            if working and method == "open" and self.name in self.ids:
                self.ids[self.name] = self.tracker.run_id  # a value changes: no key is added

    def _run(self, method: str, *args: Any) -> bool:
        try:
            getattr(self.tracker, method)(*args)
            return True
        except Exception as err:  # a tracker must never stop training
            log.warning(
                "logger=%s stopped (%s: %s); the run goes on", self.name, method, one_line(err)
            )
            if method not in ("prepare", "close"):
                with contextlib.suppress(Exception):  # end its run if it still can
                    self.tracker.close(FAILED)
            return False


def ending(err: BaseException) -> str:
    """How a run that raised `err` ended: KILLED by a signal (exit code 128 + N), else FAILED."""
    signalled = getattr(err, "exit_code", 0) >= 128 or isinstance(err, KeyboardInterrupt)
    return KILLED if signalled else FAILED


def saved_run_ids(value: Any) -> dict[str, str]:
    """The tracker run ids a checkpoint holds, if they look like ids (a checkpoint may come
    from anywhere: an id ends up in a path or a query)."""
    if not isinstance(value, dict):
        return {}
    return {k: v for k, v in value.items() if isinstance(k, str) and _is_id(v)}


def _is_id(value: Any) -> bool:
    return isinstance(value, str) and re.fullmatch(r"[A-Za-z0-9_-]{1,64}", value) is not None


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{'optimizer': {'lr': 0.01}} -> {'optimizer.lr': 0.01}; lists stay whole values."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def numbers(values: dict[str, Any]) -> dict[str, float]:
    """The entries that are numbers (not bools), as floats."""
    return {k: float(v) for k, v in values.items() if is_number(v)}


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def final_checkpoints(run_dir: Path) -> list[Path]:
    """What `log_checkpoints` uploads: best.pt and last.pt (the step-numbered files are copies
    of an earlier last.pt, kept on disk only)."""
    return [path for name in CHECKPOINTS if (path := run_dir / "checkpoints" / name).is_file()]


def relative_name(path: str | Path) -> str:
    """A path as a run name: relative to the working directory when below it."""
    path = Path(path).absolute()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    class Broken(Tracker):
        name = "broken"

        def scalars(self, step: int, values: dict[str, float]) -> None:
            raise RuntimeError(f"no store at step {step}")

    ids = {"broken": ""}
    thread = TrackerThread(Broken(), ids)
    thread.call("open", {"optimizer.lr": 0.01})
    for step in (1, 2, 3):
        thread.call("scalars", step, {"train/loss": 1.0 / step})  # one warning, not three
    thread.close(FINISHED)
    print("ids:", ids, "flat:", flatten({"optimizer": {"lr": 0.01, "betas": [0.9, 0.99]}}))
