#!/usr/bin/env bash
# A third environment for the Triton serving tests (make test-serve) and `nemo-exaone serve`.
# Why separate: nvidia-pytriton 0.7.0 (whose wheel bundles tritonserver 2.51 and the Python
# backend) pins numpy<2, and its backend stub really breaks under numpy 2 (string tensors come
# back garbled: deserialize_bytes_tensor reads a wrong length), while tritonclient[grpc] pins
# protobuf<7; the main .venv keeps numpy 2 and protobuf 7. Idempotent; prints its interpreter.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_bootstrap.sh"
venv_begin setup-serve "${NEMO_EXAONE_SERVE_VENV:-$ROOT/.venv-serve}"
log "installing nemo-exaone[dev,serve] (editable; numpy<2 from nvidia-pytriton)"
"$PY" -m pip install -q -e "$ROOT[dev,serve]" >&2
"$PY" -m pip check >&2 || true
"$PY" -c "import numpy, pytriton, tritonclient.grpc, tritonclient.http; assert numpy.__version__ < '2', numpy.__version__"
venv_end
