"""The command-line shell around the Hydra entry point: user mistakes become one line.

Exit codes: 0 success; 1 a bug (full traceback); 2 bad input (config, data, checkpoint, output
folder) with one `error: ...` line; 3 non-finite loss; 128 + N stopped by signal N after writing
last.pt (130 Ctrl-C, 143 SIGTERM, 138 SIGUSR1). Set HYDRA_FULL_ERROR=1 to see tracebacks.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from src.config.validate import ConfigError
from src.data.idx import DataError
from src.runner import StopTraining
from src.training.checkpoint import CheckpointError
from src.training.resume import resume_argv

USER_ERRORS = (
    HydraException,  # composition, unknown group options, instantiation
    OmegaConfBaseException,  # unknown keys, wrong types
    ConfigError,
    DataError,
    CheckpointError,
    OSError,  # output folder not writable, disk full
)


def one_line(err: BaseException) -> str:
    """Condense an exception (and Hydra's chained cause) to a single readable line."""
    head, *rest = _lines(err) or [type(err).__name__]
    cause = _lines(err.__cause__) if err.__cause__ is not None else []
    return " ".join(dict.fromkeys([head, *cause, *rest]))  # dedupe, keep order


def _lines(err: BaseException) -> list[str]:
    """Meaningful lines of a message; Hydra's option lists become 'a, b, c'."""
    lines: list[str] = []
    for raw in str(err).splitlines():
        line = raw.strip()
        if line.startswith(("Config search path", "full_key:", "object_type=", "reference_type")):
            break
        if not line:
            continue
        if raw.startswith("\t") and lines and not lines[-1].endswith(":"):
            lines[-1] += f", {line}"  # continuation of an indented option list
        else:
            lines.append(line)
    return lines


def exit_with(err: BaseException) -> NoReturn:
    """Print one line for a user error (or a stopped run) and exit with its code."""
    if isinstance(err, StopTraining):
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
    extra = ["hydra.output_subdir=null", "hydra/job_logging=disabled"]
    given = {a.split("=", 1)[0].lstrip("+~") for a in argv[1:]}
    return [*argv, *(e for e in extra if e.split("=", 1)[0] not in given)]


def run(entry: Callable[[], Any]) -> None:
    wants_traceback = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra re-raises, and we choose how to report
    try:
        sys.argv = quiet_other_ranks(resume_argv(sys.argv))
        entry()
    except (StopTraining, *USER_ERRORS) as err:
        if wants_traceback and not isinstance(err, StopTraining):
            raise
        exit_with(err)


def run_script(entry: Callable[[list[str]], Any], level: int = logging.INFO) -> None:
    """`python -m src.<tool> key=value ...` for the tools beside training (eval, predict)."""
    logging.basicConfig(level=level, format="[%(asctime)s][%(name)s] %(message)s")
    try:
        entry(sys.argv[1:])
    except USER_ERRORS as err:
        exit_with(err)
