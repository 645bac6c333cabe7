#!/usr/bin/env bash
# Set up the Python environment for nemo-exaone and print the interpreter to use.
#
# - An active virtual environment ($VIRTUAL_ENV) is used as is; otherwise .venv/ at the repo
#   root is created (with access to system packages when the system Python already has torch,
#   as in NGC containers, so that CUDA build is kept).
# - torch: kept if importable; otherwise torch==2.13.0 (the CPU wheel) is installed.
# - The package is installed editable with the extras named in $NEMO_EXAONE_EXTRAS
#   (default: dev). Re-runs are fast: a stamp records what was installed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
EXTRAS="${NEMO_EXAONE_EXTRAS:-dev}"
log() { echo "[setup] $*" >&2; }

if [[ -n "${VIRTUAL_ENV:-}" ]]; then
  PY="$VIRTUAL_ENV/bin/python"
else
  VENV="$ROOT/.venv"
  if [[ ! -x "$VENV/bin/python" ]]; then
    BASE_PY="$(command -v python3 || command -v python)"
    if "$BASE_PY" -c "import torch" >/dev/null 2>&1; then
      log "system Python has torch: creating $VENV with system site-packages (keeps that torch)"
      "$BASE_PY" -m venv --system-site-packages "$VENV"
    else
      log "creating $VENV"
      "$BASE_PY" -m venv "$VENV"
    fi
  fi
  PY="$VENV/bin/python"
fi

STAMP="$("$PY" -c 'import sys; print(sys.prefix)')/.nemo_exaone_setup"
WANT="$(cat "$ROOT/pyproject.toml" "$ROOT/scripts/setup_env.sh" | sha256sum | cut -c1-16)-$EXTRAS"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]] && "$PY" -c "import nemo_exaone, torch, megatron.core" >/dev/null 2>&1; then
  echo "$PY"
  exit 0
fi

"$PY" -m pip install -q --upgrade pip >&2
if "$PY" -c "import torch" >/dev/null 2>&1; then
  log "keeping torch $("$PY" -c 'import torch; print(torch.__version__)')"
else
  log "installing torch==2.13.0 (CPU build)"
  "$PY" -m pip install -q "torch==2.13.0" >&2
fi
log "installing nemo-exaone[$EXTRAS] (editable)"
"$PY" -m pip install -q -e "$ROOT[$EXTRAS]" >&2
echo "$WANT" > "$STAMP"
echo "$PY"
