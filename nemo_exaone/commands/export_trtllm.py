"""``nemo-exaone export trtllm``: a TensorRT-LLM engine-flow checkpoint (for ``trtllm-build``).

Writes ``config.json`` + ``rank{r}.safetensors`` (TensorRT-LLM 1.2.x, LLaMA class) from a
Megatron checkpoint; BF16/FP16, or FP8 weights and activations with scales calibrated by a
forward pass over sample text. Then: ``scripts/build_engine.sh OUT ENGINE [bf16|fp8]``.
EXAONE 4.0 is refused (no engine-flow class): export HF and use TensorRT-LLM's PyTorch flow.
"""

from __future__ import annotations

import argparse

from nemo_exaone.commands.arguments import add_checkpoint


def _run(args: argparse.Namespace) -> int:
    from nemo_exaone.export.trtllm_checkpoint import TrtllmOptions, export_trtllm

    options = TrtllmOptions(tp=args.tp, dtype=args.dtype, fp8=args.fp8,
                            fp8_kv_cache=args.fp8_kv_cache)
    report = export_trtllm(
        args.ckpt, args.out, options=options, calib_data=args.calib_data,
        calib_samples=args.calib_samples, calib_seq_len=args.calib_seq_len,
        calib_precision=args.calib_precision,
        tokenizer_dir=args.tokenizer, overwrite=args.overwrite,
        progress=False if args.quiet else None)
    print(report.summary())
    return 0


# The keys of trtllm_checkpoint.DTYPES, spelled here so that building the parser loads no torch.
DTYPE_CHOICES: tuple[str, ...] = ("bfloat16", "float16", "float32")


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "trtllm", help="TensorRT-LLM engine-flow checkpoint (config.json + rank{r}.safetensors)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_checkpoint(parser)
    parser.add_argument("--out", required=True,
                        help="output directory (written under a temporary name, checked, then "
                             "renamed into place)")
    parser.add_argument("--tp", type=int, default=1,
                        help="tensor parallel size of the engine: one rank file per GPU")
    parser.add_argument("--dtype", choices=DTYPE_CHOICES, default="bfloat16",
                        help="weight and activation dtype (float32: for validation)")
    parser.add_argument("--fp8", action="store_true",
                        help="FP8 (E4M3) weights and activations, per-tensor scales; lm_head "
                             "stays in --dtype")
    parser.add_argument("--fp8-kv-cache", action="store_true",
                        help="with --fp8: FP8 KV cache, scales from the calibrated key/value "
                             "ranges")
    calib = parser.add_argument_group("FP8 calibration (with --fp8: a forward pass over "
                                      "sample text sets the activation and KV scales)")
    calib.add_argument("--calib-data", default=None,
                       help="JSONL with a 'text' field (default: the corpus shipped in "
                            "nemo_exaone/assets)")
    calib.add_argument("--calib-samples", type=int, default=64,
                       help="calibration texts to run (default 64)")
    calib.add_argument("--calib-seq-len", type=int, default=256,
                       help="tokens per calibration text, longer ones cut (default 256)")
    calib.add_argument("--calib-precision", choices=("fp32", "bf16"), default="fp32",
                       help="dtype of the model during calibration (bf16 halves its memory; the "
                            "model is built on the CPU, whole)")
    calib.add_argument("--tokenizer", default=None,
                       help="tokenizer directory (default: the one the checkpoint carries)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing non-empty output directory")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=_run)
