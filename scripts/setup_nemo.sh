#!/usr/bin/env bash
# A third environment, .venv-nemo/, with NVIDIA NeMo 2 (nemo-toolkit 2.7.3, the last release
# with nemo.collections.llm) for the tests of nemo_exaone.nemo. Prints its interpreter.
#
# nemo-toolkit 2.7.3 is API-compatible only with megatron-core 0.15.x (with 0.16.1 its
# MegatronStrategy fails in get_megatron_optimizer), so this venv pins megatron-core 0.15.3.
# Our versions guard admits 0.15.3 only after importing nemo_exaone.nemo (which calls
# runtime.versions.allow_nemo_megatron_core); everything else still requires 0.16.1/0.19.2.
# megatron-core 0.15.3 declares numpy<2; it runs (all of tests/nemo) with the numpy 2 here.
# NeMo is installed without its dependencies (they list cuda-bindings and GPU-only extras);
# what `import nemo.collections.llm` and `nemo.collections.llm.api` need on a CPU is listed
# here with the resolver pins that were measured to be needed.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_bootstrap.sh"
venv_begin setup-nemo "${NEMO_EXAONE_NEMO_VENV:-$ROOT/.venv-nemo}"
PIP=("$PY" -m pip install -q)
# Our package with its dependencies (this pulls megatron-core 0.16.1, replaced below).
log "installing nemo-exaone[dev,nemo] (editable)"
"${PIP[@]}" -e "$ROOT[dev,nemo]" >&2
log "installing nemo-toolkit==2.7.3 and megatron-core==0.15.3 without dependencies"
"${PIP[@]}" --no-deps "nemo-toolkit==2.7.3" "megatron-core==0.15.3" >&2
"$PY" -m pip check >&2 || true
"$PY" - <<'PYCHECK'
from importlib.metadata import version as v
assert v("megatron-core") == "0.15.3", v("megatron-core")
assert v("nemo-toolkit") == "2.7.3", v("nemo-toolkit")
PYCHECK
venv_end
