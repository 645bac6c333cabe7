#!/usr/bin/env bash
# Build a TensorRT-LLM engine (engine flow, TensorRT-LLM 1.2.x) from a checkpoint written by
# `nemo-exaone export trtllm`. Run it where trtllm-build exists (docker/Dockerfile.trtllm, or
# NVIDIA's Triton TRT-LLM container), with one GPU per rank file of the checkpoint.
#
#   scripts/build_engine.sh CKPT ENGINE [bf16|fp8]
#
#   CKPT    the export (config.json + rank{r}.safetensors)
#   ENGINE  output directory for the engine files (rank{r}.engine + config.json)
#   bf16    (default) a bfloat16/float16 export
#   fp8     an export made with --fp8: adds --use_fp8_context_fmha enable (FP8 attention in the
#           context phase; it also needs the FP8 scales the export carries)
#
# Sizes come from the environment (defaults in brackets): MAX_BATCH_SIZE [64],
# MAX_INPUT_LEN [4096], MAX_SEQ_LEN [8192], MAX_NUM_TOKENS [8192], WORKERS [1: parallel build
# processes]. Flags are trtllm-build's own (tensorrt_llm/commands/build.py and
# plugin.py's add_plugin_argument): --checkpoint_dir, --output_dir, --gemm_plugin auto
# (cuBLASLt GEMMs in the checkpoint dtype), --max_batch_size, --max_input_len, --max_seq_len,
# --max_num_tokens, --workers, --use_fp8_context_fmha. TensorRT-LLM says EXAONE does not support
# --load_by_shard, so it is not used. Extra arguments after the mode go to trtllm-build as they
# are.
set -euo pipefail

usage() {
  sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

[[ $# -ge 2 ]] || usage
CKPT="$1"
ENGINE="$2"
MODE="${3:-bf16}"
shift $(( $# >= 3 ? 3 : 2 ))

if ! command -v trtllm-build >/dev/null 2>&1; then
  echo "build_engine.sh: trtllm-build is not on PATH: run this inside an image with" \
       "TensorRT-LLM 1.2.x (docker/Dockerfile.trtllm, or nvcr.io's Triton TRT-LLM container)" >&2
  exit 127
fi
if [[ ! -f "$CKPT/config.json" || ! -f "$CKPT/rank0.safetensors" ]]; then
  echo "build_engine.sh: $CKPT is not a TensorRT-LLM checkpoint (config.json and" \
       "rank0.safetensors expected; write one with: nemo-exaone export trtllm)" >&2
  exit 2
fi
QUANT_ALGO="$(python3 -c 'import json, sys
q = json.load(open(sys.argv[1])).get("quantization") or {}
print(q.get("quant_algo") or "none")' "$CKPT/config.json")"

FLAGS=(
  --checkpoint_dir "$CKPT"
  --output_dir "$ENGINE"
  --gemm_plugin auto
  --max_batch_size "${MAX_BATCH_SIZE:-64}"
  --max_input_len "${MAX_INPUT_LEN:-4096}"
  --max_seq_len "${MAX_SEQ_LEN:-8192}"
  --max_num_tokens "${MAX_NUM_TOKENS:-8192}"
  --workers "${WORKERS:-1}"
)
case "$MODE" in
  bf16)
    if [[ "$QUANT_ALGO" == "FP8" ]]; then
      echo "build_engine.sh: $CKPT is an FP8 export; build it with mode fp8" >&2
      exit 2
    fi
    ;;
  fp8)
    if [[ "$QUANT_ALGO" != "FP8" ]]; then
      echo "build_engine.sh: $CKPT has quant_algo=$QUANT_ALGO; mode fp8 needs an export made" \
           "with nemo-exaone export trtllm --fp8" >&2
      exit 2
    fi
    FLAGS+=(--use_fp8_context_fmha enable)
    ;;
  *)
    echo "build_engine.sh: mode '$MODE': choose bf16 or fp8" >&2
    exit 2
    ;;
esac

echo "+ trtllm-build ${FLAGS[*]} $*" >&2
exec trtllm-build "${FLAGS[@]}" "$@"
