#!/usr/bin/env bash
# A second environment with megatron-core 0.19.2 (the version in current NGC containers), so
# the model tests run against both supported Megatron-Core lines. 0.19 declares Python >= 3.12;
# on 3.11 it installs from its sdist with --ignore-requires-python. Prints its interpreter.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${NEMO_EXAONE_MCORE019_VENV:-$ROOT/.venv-mcore019}"
log() { echo "[setup-mcore019] $*" >&2; }
STAMP="$VENV/.nemo_exaone_setup"
WANT="$(cat "$ROOT/pyproject.toml" "$ROOT/scripts/setup_mcore019.sh" | sha256sum | cut -c1-16)"
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
# The package and its dependencies first (resolved for this Python, so numpy is one with a
# wheel here), then megatron-core 0.19.2 alone: with --ignore-requires-python pip would also
# take the newest numpy sdist, which refuses to build on 3.11.
"$PY" -m pip install -q -e "$ROOT[dev]" >&2
log "installing megatron-core==0.19.2"
"$PY" -m pip install -q --no-deps --ignore-requires-python "megatron-core==0.19.2" >&2
"$PY" -m pip check >&2 || true
"$PY" -c "from importlib.metadata import version as v; assert v('megatron-core') == '0.19.2', v('megatron-core')"
echo "$WANT" > "$STAMP"
echo "$PY"
