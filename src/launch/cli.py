"""The command-line shell around the entry points: user mistakes become one line.

Exit codes: 0 success; 1 a bug (full traceback); 2 bad input (config, data, checkpoint, output
folder, a full disk) with one `error: ...` line; 3 non-finite loss; 4 a sweep in which some
trial did not complete (summary.md lists them); 128 + N stopped by signal N (130 Ctrl-C, 143
SIGTERM, 138 SIGUSR1), after writing last.pt once training has begun. Set HYDRA_FULL_ERROR=1 to
see the traceback of a user error too.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from src.common.args import split_override
from src.common.errors import UserError, one_line
from src.launch.distributed import world_from_env
from src.launch.signals import Interrupted, StopTraining
from src.launch.slurm import requeue_if_preempted

_TRACEBACKS = "DL_TEMPLATE_TRACEBACKS"  # what HYDRA_FULL_ERROR was before we set it
USER_ERRORS = (
    UserError,  # config values, data, checkpoints: the project's own one-line errors
    HydraException,  # composition, unknown group options, instantiation
    OmegaConfBaseException,  # unknown keys, wrong types
    OSError,  # output folder not writable, disk full
)
SWEEP_INCOMPLETE = 4  # exit code of a sweep in which some trial failed or was stopped


def exit_with(err: BaseException) -> NoReturn:
    """Print one line for a user error (or a stopped run) and exit with its code."""
    if isinstance(err, (StopTraining, Interrupted)):
        logging.getLogger("src.main").error("%s", err)
        print(err, file=sys.stderr)
        sys.exit(err.exit_code)
    print(f"error: {one_line(err)}", file=sys.stderr)
    sys.exit(2)


def quiet_other_ranks(argv: list[str]) -> list[str]:
    """Under torchrun every rank runs Hydra in the same run directory: only rank 0 may write
    `.hydra/` and `main.log`, so the other ranks get no output subdir and error-only logging."""
    if int(os.environ.get("RANK", "0")) == 0:
        return argv
    given = {split_override(a)[0] for a in argv[1:]}
    kept = [a for a in argv[1:] if split_override(a)[0] != "hydra.output_subdir"]  # resume's too
    logging_off = [] if "hydra/job_logging" in given else ["hydra/job_logging=disabled"]
    return [argv[0], *kept, "hydra.output_subdir=null", *logging_off]


@contextmanager
def one_line_errors() -> Iterator[None]:
    """Inside a run: a user error or a stop exits here (a stopped SLURM job requeues first),
    before Hydra would print its own report of the exception."""
    try:
        yield
    except (StopTraining, Interrupted) as err:
        requeue_if_preempted(err.exit_code, world_from_env())
        exit_with(err)
    except USER_ERRORS as err:
        if os.environ.get(_TRACEBACKS) == "1":
            raise
        exit_with(err)


def run(entry: Callable[[], Any], rewrite_argv: Callable[[list[str]], list[str]]) -> None:
    """Run a Hydra entry point; errors while composing the config become one line too."""
    os.environ.setdefault(_TRACEBACKS, os.environ.get("HYDRA_FULL_ERROR", "0"))
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra re-raises, and we choose how to report
    with one_line_errors():
        sys.argv = quiet_other_ranks(rewrite_argv(sys.argv))
        entry()


def run_script(entry: Callable[[list[str]], Any], level: int = logging.INFO) -> None:
    """`python -m src.<tool> key=value ...` for the tools beside training (eval, predict)."""
    logging.basicConfig(level=level, format="[%(asctime)s][%(name)s] %(message)s")
    try:
        entry(sys.argv[1:])
    except USER_ERRORS as err:
        exit_with(err)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
