#!/usr/bin/env bash
# Launch training. Launcher flags come first; every other argument is a Hydra override, passed
# through unchanged. Each mode prints the exact command it runs. See docs/distributed.md.
#   ./launch.sh [overrides]                      one local process
#   ./launch.sh --nproc 4 [overrides]            torchrun --standalone: 4 processes on this machine
#   ./launch.sh --nproc 4 --max-restarts 3 ...   a rank that dies restarts the group, which
#                                                resumes from the last checkpoint on its own
#   ./launch.sh --nproc 8 --nnodes 2 --node-rank 0 --master-addr host0 [--master-port 29500] ...
#                                                one node of several (run it on every node)
#   ./launch.sh --nproc 8 --nnodes 2 --rdzv-endpoint host0:29500 ...    the same, c10d rendezvous
#   ./launch.sh --slurm [--nodes 2] [--gpus 4] [--time 04:00:00] [--partition p] [--account a]
#               [--cpus 8] [--dry-run] [overrides]
#                                                write an sbatch script (srun + torchrun) and
#                                                submit it; --dry-run prints it instead
# sbatch's own SBATCH_PARTITION, SBATCH_ACCOUNT, SBATCH_TIMELIMIT, ... still apply. Several nodes
# without SLURM: set RUN_STAMP to the same name on every node, so they share one run directory.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-.venv/bin/python}
TORCHRUN=${TORCHRUN:-$(dirname "$PY")/torchrun}
given_stamp=${RUN_STAMP:-}
# The run directory's name: this shell's pid (which python or torchrun inherits through exec)
# keeps two launches in the same second apart; every rank of the job reads the same value.
export RUN_STAMP=${RUN_STAMP:-$(date +%Y-%m-%d/%H-%M-%S)-$$}
# Signals torchrun forwards to every rank (SIGUSR1: SLURM's "time is nearly up" warning). Without
# SIGUSR1 in the list torchrun dies of it and its ranks never checkpoint. PET_* is torchrun's
# --signals-to-handle (torch >= 2.8); older versions read TORCHELASTIC_SIGNALS_TO_HANDLE.
signals=${PET_SIGNALS_TO_HANDLE:-SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1}
export PET_SIGNALS_TO_HANDLE=$signals TORCHELASTIC_SIGNALS_TO_HANDLE=$signals
# After forwarding a signal torchrun waits this long for the ranks to write last.pt and exit
# before it SIGKILLs them (its default, 30 s, is shorter than a large checkpoint can take).
# SLURM's warning comes 90 s before the limit (--signal=USR1@90): 80 s still ends in time.
shutdown=${TORCH_ELASTIC_SHUTDOWN_TIMEOUT:-80}
export TORCH_ELASTIC_SHUTDOWN_TIMEOUT=$shutdown

nproc="" max_restarts="" nnodes=1 node_rank="" master_addr="" master_port=29500 rdzv_endpoint=""
slurm=0 dry_run=0
nodes=1 gpus=1 time_limit=04:00:00 partition="" account="" cpus=8
need() { [[ $# -ge 2 && -n $2 ]] || { echo "launch.sh: $1 needs a value" >&2; exit 2; }; }
while [[ $# -gt 0 ]]; do
  case $1 in
    --nproc) need "$@"; nproc=$2; shift 2 ;;
    --max-restarts) need "$@"; max_restarts=$2; shift 2 ;;
    --nnodes) need "$@"; nnodes=$2; shift 2 ;;
    --node-rank) need "$@"; node_rank=$2; shift 2 ;;
    --master-addr) need "$@"; master_addr=$2; shift 2 ;;
    --master-port) need "$@"; master_port=$2; shift 2 ;;
    --rdzv-endpoint) need "$@"; rdzv_endpoint=$2; shift 2 ;;
    --slurm) slurm=1; shift ;;
    --nodes) need "$@"; nodes=$2; shift 2 ;;
    --gpus) need "$@"; gpus=$2; shift 2 ;;
    --time) need "$@"; time_limit=$2; shift 2 ;;
    --partition) need "$@"; partition=$2; shift 2 ;;
    --account) need "$@"; account=$2; shift 2 ;;
    --cpus) need "$@"; cpus=$2; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    --) shift; break ;;
    -h | --help) sed -n '2,17p' "$0"; exit 0 ;;
    *) break ;;
  esac
done

sbatch_script() {  # $@: Hydra overrides
  local overrides="" threads=$((cpus / (gpus > 0 ? gpus : 1)))
  [[ $# -gt 0 ]] && overrides=$(printf ' %q' "$@")
  cat <<EOF
#!/usr/bin/env bash
#SBATCH --job-name=dl-template
#SBATCH --nodes=$nodes
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=$gpus
#SBATCH --cpus-per-task=$cpus
#SBATCH --time=$time_limit
${partition:+#SBATCH --partition=$partition
}${account:+#SBATCH --account=$account
}#SBATCH --signal=USR1@90
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=outputs/slurm-%j.out
# SIGUSR1 90 s before the limit: the ranks write last.pt, rank 0 runs 'scontrol requeue', and the
# requeued job (same id, same run directory, resume=auto) continues from last.pt.
set -euo pipefail
cd $(printf '%q' "$PWD")
export OMP_NUM_THREADS=\${OMP_NUM_THREADS:-$((threads > 0 ? threads : 1))}
export PET_SIGNALS_TO_HANDLE=$signals TORCHELASTIC_SIGNALS_TO_HANDLE=$signals
export TORCH_ELASTIC_SHUTDOWN_TIMEOUT=$shutdown
head_node=\$(scontrol show hostnames "\$SLURM_JOB_NODELIST" | head -n 1)
srun --kill-on-bad-exit=1 $(printf '%q' "$TORCHRUN") \\
  --nnodes "\$SLURM_NNODES" --nproc_per_node $gpus \\
  --rdzv_id "\$SLURM_JOB_ID" --rdzv_backend c10d --rdzv_endpoint "\$head_node:$master_port" \\
  -m src.main "hydra.run.dir=outputs/slurm-\$SLURM_JOB_ID" resume=auto$overrides
EOF
}

if [[ $slurm == 1 ]]; then
  if [[ $dry_run == 1 ]]; then
    sbatch_script "$@"
    exit 0
  fi
  script=outputs/slurm/$(date +%Y-%m-%d_%H-%M-%S).sbatch
  mkdir -p outputs/slurm
  sbatch_script "$@" >"$script"
  echo "+ sbatch $script"
  exec sbatch "$script"
fi

if [[ -z $nproc ]]; then
  cmd=("$PY" -m src.main "$@")
else
  cmd=("$TORCHRUN" --nproc_per_node "$nproc")
  [[ -n $max_restarts ]] && cmd+=(--max_restarts "$max_restarts")
  if [[ $nnodes == 1 && -z $rdzv_endpoint ]]; then
    cmd+=(--standalone)
  elif [[ -z $given_stamp ]]; then
    echo "launch.sh: with several nodes set RUN_STAMP=<name>, the same on every node" >&2
    exit 2
  elif [[ -n $rdzv_endpoint ]]; then
    cmd+=(--nnodes "$nnodes" --rdzv_backend c10d --rdzv_endpoint "$rdzv_endpoint")
    cmd+=(--rdzv_id "${RDZV_ID:-${RUN_STAMP//[^A-Za-z0-9]/-}}")
  else
    [[ -n $node_rank && -n $master_addr ]] || {
      echo "launch.sh: --nnodes > 1 needs --node-rank and --master-addr (or --rdzv-endpoint)" >&2
      exit 2
    }
    cmd+=(--nnodes "$nnodes" --node_rank "$node_rank")
    cmd+=(--master_addr "$master_addr" --master_port "$master_port")
  fi
  cmd+=(-m src.main "$@")
fi
echo "+ ${cmd[*]}"
exec "${cmd[@]}"
