#!/usr/bin/env bash
# Download here, as manylinux cp312 wheels, everything scripts/gpu_check.sh needs on the lent
# GPU machine beyond its own CUDA torch (that machine has Python 3.12 and no network), into an
# ignored .whl/ that travels with the device tool's `carry: [".whl"]`:
#   - megatron-core pinned to a tested version ($MCORE_VERSION, default below),
#   - hydra-core, omegaconf and antlr4-python3-runtime (sdist only on PyPI: built here, pure
#     Python), PyYAML, safetensors, tokenizers, xxhash, psutil, tqdm, packaging,
#   - pytest (+ pluggy, iniconfig, pygments, pytest-timeout) for the Transformer Engine tests,
#   - this project's own wheel (pip wheel --no-deps).
# Versions are the ones the CPU test environment runs. numpy is left out: every CUDA torch
# install has one (gpu_check.sh stops, naming it, if not). Prints the total size; the device
# tool carries at most 64 MiB with the working tree.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="${WHEEL_DIR:-$ROOT/.whl}"
MCORE_VERSION="${MCORE_VERSION:-0.19.2}"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
log() { echo "[gpu-wheels] $*" >&2; }

# Same versions as the CPU test environment ($PY) runs, so the GPU check tests what CI tests.
NAMES=(hydra-core omegaconf PyYAML safetensors tokenizers xxhash psutil tqdm packaging
       pytest pluggy iniconfig pygments pytest-timeout)
mapfile -t BINARY < <("$PY" - "${NAMES[@]}" <<'PYEOF'
import sys
from importlib.metadata import version
for name in sys.argv[1:]:
    print(f"{name}=={version(name)}")
PYEOF
)
BINARY+=("megatron-core==$MCORE_VERSION")
ANTLR="$("$PY" -c 'from importlib.metadata import version; print(version("antlr4-python3-runtime"))')"
SOURCE_ONLY=("antlr4-python3-runtime==$ANTLR")  # hydra/omegaconf's parser runtime: no wheel
PLATFORMS=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 \
         manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64 any; do
  PLATFORMS+=(--platform "$p")
done

rm -rf "$DEST.partial"
mkdir -p "$DEST.partial"
log "downloading ${#BINARY[@]} wheels for cp312 manylinux x86_64"
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp "${PLATFORMS[@]}" -d "$DEST.partial" "${BINARY[@]}"
log "building ${SOURCE_ONLY[*]} (pure Python) and nemo-exaone"
"$PY" -m pip wheel -q --no-deps --no-binary=:all: -w "$DEST.partial" "${SOURCE_ONLY[@]}"
BUILD="$(mktemp -d)"
trap 'rm -rf "$BUILD"' EXIT
# Build from a copy so no build/ or *.egg-info lands in the working tree.
tar -C "$ROOT" --exclude=__pycache__ -cf - pyproject.toml README.md nemo_exaone | tar -C "$BUILD" -xf -
"$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$DEST.partial" "$BUILD"
for f in "$DEST.partial"/*.whl; do
  case "$(basename "$f")" in
    *-py3-none-any.whl|*-py2.py3-none-any.whl|*-cp312-*|*-abi3-*) ;;
    *) echo "gpu_wheels: $(basename "$f") is not for CPython 3.12" >&2; exit 1 ;;
  esac
done
"$PY" "$ROOT/scripts/gpu_install.py" --source-hash > "$DEST.partial/nemo_exaone.source-sha256"
rm -rf "$DEST"
mv "$DEST.partial" "$DEST"
ls -1 "$DEST" >&2
BYTES="$(du -cb "$DEST"/*.whl | tail -1 | cut -f1)"
log "$(ls "$DEST"/*.whl | wc -l) wheels, $((BYTES / 1024)) KiB in $DEST"
if (( BYTES > 48 * 1024 * 1024 )); then
  echo "gpu_wheels: $DEST is $((BYTES / 1048576)) MiB; the device tool carries 64 MiB with the tree" >&2
  exit 1
fi
