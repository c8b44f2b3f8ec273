#!/usr/bin/env bash
# Launch training. Arguments are Hydra overrides, passed through unchanged:
#   ./launch.sh                         the default job, one local process
#   ./launch.sh model=mlp seed=1        the same with overrides
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-.venv/bin/python}
export RUN_STAMP=${RUN_STAMP:-$(date +%Y-%m-%d/%H-%M-%S)}
cmd=("$PY" -m src.main "$@")
echo "+ ${cmd[*]}"
exec "${cmd[@]}"
