#!/usr/bin/env bash
# A third environment for the Triton serving tests (make test-serve) and `nemo-exaone serve`.
# Why separate: nvidia-pytriton 0.7.0 (whose wheel bundles tritonserver 2.51 and the Python
# backend) pins numpy<2, and its backend stub really breaks under numpy 2 (string tensors come
# back garbled: deserialize_bytes_tensor reads a wrong length), while tritonclient[grpc] pins
# protobuf<7; the main .venv keeps numpy 2 and protobuf 7. Idempotent; prints its interpreter.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${NEMO_EXAONE_SERVE_VENV:-$ROOT/.venv-serve}"
log() { echo "[setup-serve] $*" >&2; }
STAMP="$VENV/.nemo_exaone_setup"
WANT="$(cat "$ROOT/pyproject.toml" "$ROOT/scripts/setup_serve.sh" | sha256sum | cut -c1-16)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]]; then echo "$VENV/bin/python"; exit 0; fi
BASE_PY="$(command -v python3 || command -v python)"
if "$BASE_PY" -c "import torch" >/dev/null 2>&1; then
  [[ -x "$VENV/bin/python" ]] || "$BASE_PY" -m venv --system-site-packages "$VENV"
else
  [[ -x "$VENV/bin/python" ]] || "$BASE_PY" -m venv "$VENV"
fi
PY="$VENV/bin/python"
"$PY" -m pip install -q --upgrade pip >&2
"$PY" -c "import torch" >/dev/null 2>&1 || "$PY" -m pip install -q "torch==2.13.0" >&2
log "installing nemo-exaone[dev,serve] (editable; numpy<2 from nvidia-pytriton)"
"$PY" -m pip install -q -e "$ROOT[dev,serve]" >&2
"$PY" -m pip check >&2 || true
"$PY" -c "import numpy, pytriton, tritonclient.grpc, tritonclient.http; assert numpy.__version__ < '2', numpy.__version__"
echo "$WANT" > "$STAMP"
echo "$PY"
