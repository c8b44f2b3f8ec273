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
from typing import Any

from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from src.checkpoint import CheckpointError
from src.config.validate import ConfigError
from src.data.idx import DataError
from src.resume import resume_argv
from src.runner import StopTraining

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
    parts = []
    for exc in (err, err.__cause__):
        if exc is None:
            continue
        lines = []
        for raw in str(exc).splitlines():
            line = raw.strip()
            if line.startswith(("Config search path", "full_key:", "object_type=", "reference_type")):
                break
            if line:
                lines.append(line)
        text = " ".join(lines)
        if text and text not in parts:
            parts.append(text)
    return " ".join(parts) or type(err).__name__


def run(entry: Callable[[], Any]) -> None:
    wants_traceback = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra re-raises, and we choose how to report
    try:
        sys.argv = resume_argv(sys.argv)
        entry()
    except StopTraining as stop:
        logging.getLogger("src.main").error("%s", stop)
        print(stop, file=sys.stderr)
        sys.exit(stop.exit_code)
    except USER_ERRORS as err:
        if wants_traceback:
            raise
        print(f"error: {one_line(err)}", file=sys.stderr)
        sys.exit(2)
