#!/usr/bin/env bash
# A second environment with megatron-core 0.19.2 (the version in current NGC containers), so
# the model tests run against both supported Megatron-Core lines. 0.19 declares Python >= 3.12;
# on 3.11 it installs from its sdist with --ignore-requires-python. Prints its interpreter.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_bootstrap.sh"
venv_begin setup-mcore019 "${NEMO_EXAONE_MCORE019_VENV:-$ROOT/.venv-mcore019}"
# The package and its dependencies first (resolved for this Python, so numpy is one with a
# wheel here), then megatron-core 0.19.2 alone: with --ignore-requires-python pip would also
# take the newest numpy sdist, which refuses to build on 3.11.
"$PY" -m pip install -q -e "$ROOT[dev]" >&2
log "installing megatron-core==0.19.2"
"$PY" -m pip install -q --no-deps --ignore-requires-python "megatron-core==0.19.2" >&2
"$PY" -m pip check >&2 || true
"$PY" -c "from importlib.metadata import version as v; assert v('megatron-core') == '0.19.2', v('megatron-core')"
venv_end
