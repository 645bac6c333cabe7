# Sourced (not run) by scripts/setup_mcore019.sh, setup_serve.sh and setup_nemo.sh: the part of
# a side environment's setup they share.
#
#   venv_begin TAG VENV  prints VENV's interpreter and exits the calling script when VENV's stamp
#                        matches (pyproject.toml, the calling script and this file unchanged);
#                        otherwise creates VENV (with the system site-packages when the system
#                        Python already has torch, as in NGC containers, so that build is kept),
#                        upgrades pip, installs the CPU wheel torch==2.13.0 when no torch is
#                        importable, and sets PY. log MESSAGE then writes "[TAG] MESSAGE" to stderr.
#   venv_end             after the caller's own installs: writes the stamp and prints PY.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

log() { echo "[$LOG_TAG] $*" >&2; }

venv_begin() {
  LOG_TAG="$1"
  VENV="$2"
  STAMP="$VENV/.nemo_exaone_setup"
  WANT="$(cat "$ROOT/pyproject.toml" "${BASH_SOURCE[1]}" "${BASH_SOURCE[0]}" | sha256sum \
    | cut -c1-16)"
  if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]]; then echo "$VENV/bin/python"; exit 0; fi
  local base_py
  base_py="$(command -v python3 || command -v python)"
  if "$base_py" -c "import torch" >/dev/null 2>&1; then
    [[ -x "$VENV/bin/python" ]] || "$base_py" -m venv --system-site-packages "$VENV"
  else
    [[ -x "$VENV/bin/python" ]] || "$base_py" -m venv "$VENV"
  fi
  PY="$VENV/bin/python"
  "$PY" -m pip install -q --upgrade pip >&2
  "$PY" -c "import torch" >/dev/null 2>&1 || "$PY" -m pip install -q "torch==2.13.0" >&2
}

venv_end() {
  echo "$WANT" > "$STAMP"
  echo "$PY"
}
