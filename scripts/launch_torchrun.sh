#!/usr/bin/env bash
# Launch a training script with torchrun, on one node or as one node of many.
#
#   scripts/launch_torchrun.sh [SCRIPT.py] [HYDRA OVERRIDES...]
#
# One node (default): a standalone rendezvous, one process per GPU (or NPROC processes on a
# CPU machine: gloo). Many nodes: run this once per node with the same NNODES, MASTER_ADDR
# and MASTER_PORT (scripts/slurm_pretrain.sbatch does this under SLURM); torchrun's c10d
# rendezvous assigns ranks. The config is the same either way; only `parallel=...` and the
# batch sizes decide the layout (data parallel = world size / (TP x PP x CP)).
#
# Environment: NPROC (processes on this node; default: GPUs, or 1 without CUDA),
#   NNODES (default 1), MASTER_ADDR / MASTER_PORT (multi-node rendezvous endpoint),
#   RDZV_ID (job id; SLURM_JOB_ID when set), PYTHON (interpreter; default: python).
# Examples:
#   scripts/launch_torchrun.sh examples/pretrain.py parallel=node8_tp8 data.blend=...
#   NPROC=2 scripts/launch_torchrun.sh --config-name tiny_cpu parallel=tp2    # CPU, gloo
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python}"
SCRIPT="examples/pretrain.py"
if [[ $# -gt 0 && "$1" == *.py ]]; then SCRIPT="$1"; shift; fi

if [[ -z "${NPROC:-}" ]]; then
  NPROC="$("$PYTHON" -c 'import torch; print(torch.cuda.device_count() or 1)')"
fi
NNODES="${NNODES:-1}"

if [[ "$NNODES" == "1" ]]; then
  RDZV=(--standalone)
else
  : "${MASTER_ADDR:?set MASTER_ADDR (address of the first node) for a multi-node launch}"
  RDZV=(--nnodes "$NNODES" --rdzv-backend c10d
        --rdzv-endpoint "${MASTER_ADDR}:${MASTER_PORT:-29500}"
        --rdzv-id "${RDZV_ID:-${SLURM_JOB_ID:-nemo-exaone}}")
fi

# One intra-op thread pool per process, sized to this node's cores.
if [[ -z "${OMP_NUM_THREADS:-}" ]]; then
  CORES="$("$PYTHON" -c 'import os; print(len(os.sched_getaffinity(0)))')"
  export OMP_NUM_THREADS=$(( CORES / NPROC > 0 ? CORES / NPROC : 1 ))
fi

cd "$ROOT"
exec "$PYTHON" -m torch.distributed.run "${RDZV[@]}" --nproc-per-node "$NPROC" \
  "$SCRIPT" "$@"
