"""SLURM pre-emption: once the run has checkpointed on SIGUSR1, put the job back in the queue.

The sbatch script that `launch.sh --slurm` writes asks SLURM for SIGUSR1 90 s before the time
limit (`--signal=USR1@90`, `--requeue`), lets torchrun forward it to every rank
(TORCHELASTIC_SIGNALS_TO_HANDLE), and runs with a fixed `hydra.run.dir=outputs/slurm-<job id>`
and `resume=auto`. The ranks finish their step, rank 0 writes last.pt, every rank exits 138, and
rank 0 calls `scontrol requeue <job id>` (here). The requeued job keeps its id, so it reopens the
same run directory and resumes from last.pt; a first start finds none and starts fresh.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from collections.abc import Mapping

from src.launch.distributed import World

log = logging.getLogger(__name__)
PREEMPTED = 128 + signal.SIGUSR1  # the exit code of a run stopped by SLURM's warning signal


def job_id(env: Mapping[str, str]) -> str | None:
    """The id `scontrol requeue` expects: <array job>_<task> for array jobs, else the job id."""
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID") or None


def requeue_if_preempted(exit_code: int, world: World, env: Mapping[str, str] = os.environ) -> bool:
    """On rank 0 of a SLURM job stopped by SIGUSR1, requeue it; True when scontrol accepted."""
    job = job_id(env)
    if exit_code != PREEMPTED or not world.is_main or job is None:
        return False
    try:
        done = subprocess.run(
            ["scontrol", "requeue", job], env=dict(env), capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        log.error("could not requeue SLURM job %s: %s", job, err)
        return False
    if done.returncode != 0:
        log.error("scontrol requeue %s failed: %s", job, done.stderr.strip())
        return False
    log.info("requeued SLURM job %s; it will resume from checkpoints/last.pt", job)
    return True


if __name__ == "__main__":
    print("job id:", job_id(os.environ), "| exit code that triggers a requeue:", PREEMPTED)
