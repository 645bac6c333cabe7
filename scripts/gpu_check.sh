#!/usr/bin/env bash
# The device check, offline: on a machine with Python 3.12 + CUDA torch and no network (the
# lent H200), install the wheels that scripts/gpu_wheels.sh put in .whl/ into a target
# directory (never scripts/setup_env.sh, never the network), then run scripts/gpu_check.py:
# CUDA bf16 vs CPU fp32 forward and training, MFU of the local spec (2.4B, 7.8B shape with 8
# layers), and the Transformer Engine/FP8 tests where TE imports (reported as skipped
# otherwise). About 4-5 minutes on an H200; the phases stop at --budget-s (default 450 s).
#
#   scripts/gpu_check.sh                  GPU machine: install from .whl/, run every phase
#   scripts/gpu_check.sh --no-install     GPU machine whose Python already has the package
#                                         (e.g. the docker/Dockerfile image)
#   scripts/gpu_check.sh --install-only   install and import-check only (rehearse the
#                                         offline install in a clean Python 3.12 here)
#   scripts/gpu_check.sh --cpu-rehearsal  the same driver on this CPU with tiny sizes, with
#                                         .venv's interpreter and this source tree
# Further arguments go to scripts/gpu_check.py (e.g. --budget-s 300).
# Environment: PYTHON (default python3; .venv/bin/python for --cpu-rehearsal), WHEELS (.whl),
# NEMO_EXAONE_SITE (install target, default /tmp/nemo_exaone_site), OUT (results folder: the
# device tool's $OUT, else runs/gpu_check). Results: $OUT/gpu_check.json, $OUT/gpu_check.log.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODE=gpu
case "${1:-}" in
  --no-install|--install-only|--cpu-rehearsal) MODE="${1#--}"; shift ;;
esac
WHEELS="${WHEELS:-$ROOT/.whl}"
SITE="${NEMO_EXAONE_SITE:-/tmp/nemo_exaone_site}"
RESULTS="${OUT:-$ROOT/runs/gpu_check}"
mkdir -p "$RESULTS"
LOG="$RESULTS/gpu_check.log"
export PYTHONUNBUFFERED=1

case "$MODE" in
  cpu-rehearsal)
    PY="${PYTHON:-$ROOT/.venv/bin/python}"
    export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
    "$PY" "$ROOT/scripts/gpu_check.py" --cpu-rehearsal --out "$RESULTS/gpu_check.json" \
      "$@" 2>&1 | tee "$LOG"
    exit ;;
  no-install)
    PY="${PYTHON:-python3}" ;;
  gpu|install-only)
    PY="${PYTHON:-python3}"
    NO_TORCH=()
    [[ "$MODE" == install-only ]] && NO_TORCH=(--no-torch-ok)
    rm -rf "$SITE"
    "$PY" "$ROOT/scripts/gpu_install.py" --wheels "$WHEELS" --target "$SITE" "${NO_TORCH[@]}" \
      2>&1 | tee "$LOG"
    [[ "$MODE" == install-only ]] && exit 0
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" ;;
esac
"$PY" "$ROOT/scripts/gpu_check.py" --out "$RESULTS/gpu_check.json" "$@" 2>&1 | tee -a "$LOG"
