#!/usr/bin/env bash
# Every GPU check in one go, for a machine with an NVIDIA GPU (one H100: well under 10 min).
#   - GPU tests: Transformer Engine spec vs local spec, FP8 (delayed and per-tensor current
#     scaling) vs BF16 over 20 steps;
#   - the training throughput/MFU benchmark in GPU mode, when present.
# Results are printed and appended as JSON lines to ${GPU_CHECK_OUT:-gpu_check.jsonl};
# record the figures with the card's name in benchmarks/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${GPU_CHECK_OUT:-gpu_check.jsonl}"
PY="${PYTHON:-$(scripts/setup_env.sh)}"
"$PY" - <<'PY'
import torch, sys
if not torch.cuda.is_available():
    sys.exit("gpu_check: no CUDA device visible; run this on a GPU machine")
print("device:", torch.cuda.get_device_name(0), "torch", torch.__version__)
try:
    import transformer_engine, transformer_engine.pytorch  # noqa: F401
    print("transformer_engine", transformer_engine.__version__)
except Exception as exc:  # noqa: BLE001
    print("transformer_engine not importable:", exc, "- install nemo-exaone[gpu]")
PY
"$PY" -m pytest -p no:cacheprovider -m gpu -v tests/ 2>&1 | tee gpu_check_pytest.log
if [[ -f benchmarks/train_throughput.py ]]; then
  "$PY" benchmarks/train_throughput.py --gpu 2>&1 | tee -a gpu_check_bench.log
  grep '^{' gpu_check_bench.log >> "$OUT" || true
fi
echo "gpu_check: done; JSON lines in $OUT"
