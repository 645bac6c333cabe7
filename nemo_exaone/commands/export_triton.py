"""``nemo-exaone export triton-repo``: a Triton model repository for TensorRT-LLM serving.

Engine flow (TensorRT-LLM 1.2.x): ``--engine DIR --tokenizer DIR`` writes the
``inflight_batcher_llm`` repository (preprocessing, tensorrt_llm, postprocessing, ensemble;
``--bls`` adds tensorrt_llm_bls), every template parameter filled. PyTorch flow: ``--backend
llmapi --hf DIR`` writes the repository for Triton's LLM-API backend over the
Llama-compatible HF export. Paths are written absolute; ``--unchecked-paths`` writes them as
given without looking (for paths that exist only inside the serving container).
"""

from __future__ import annotations

import argparse
import sys


def run(args: argparse.Namespace) -> int:
    from nemo_exaone.config.errors import ConfigError
    from nemo_exaone.export.triton_repo import (
        InflightBatcherOptions,
        write_inflight_batcher_repo,
        write_llmapi_repo,
    )

    check = not args.unchecked_paths
    if args.backend == "llmapi":
        if args.hf is None:
            raise ConfigError("--backend llmapi needs --hf DIR (the Llama-compatible export)")
        if args.engine is not None or args.bls:
            raise ConfigError("--engine/--bls belong to --backend tensorrtllm (engine flow)")
        out = write_llmapi_repo(args.out, hf=args.hf, tensor_parallel_size=args.tp,
                                pipeline_parallel_size=args.pp, decoupled=args.decoupled,
                                backend_source=args.backend_source, overwrite=args.overwrite,
                                check_paths=check)
    else:
        if args.engine is None or args.tokenizer is None:
            raise ConfigError("--backend tensorrtllm needs --engine DIR and --tokenizer DIR")
        if args.hf is not None or args.backend_source is not None:
            raise ConfigError("--hf/--backend-source belong to --backend llmapi")
        options = InflightBatcherOptions(
            max_batch_size=args.max_batch_size, decoupled=args.decoupled, bls=args.bls,
            max_queue_delay_microseconds=args.max_queue_delay_us,
            max_beam_width=args.max_beam_width, batching_strategy=args.batching_strategy,
            batch_scheduler_policy=args.batch_scheduler_policy,
            kv_cache_free_gpu_mem_fraction=args.kv_cache_free_gpu_mem_fraction,
            exclude_input_in_output=not args.include_input_in_output,
            enable_kv_cache_reuse=args.enable_kv_cache_reuse,
            enable_chunked_context=args.enable_chunked_context,
            logits_datatype=args.logits_datatype, accumulate_tokens=args.accumulate_tokens)
        out = write_inflight_batcher_repo(args.out, engine=args.engine, tokenizer=args.tokenizer,
                                          options=options, overwrite=args.overwrite,
                                          check_paths=check)
    print(f"wrote {out}", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("triton-repo", help="Triton model repository for TensorRT-LLM",
                            description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="repository directory to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("--backend", choices=("tensorrtllm", "llmapi"), default="tensorrtllm",
                        help="engine flow (inflight_batcher_llm) or the LLM-API backend")
    parser.add_argument("--engine", help="trtllm-build output directory (engine flow)")
    parser.add_argument("--tokenizer", help="tokenizer directory (tokenizer.json + "
                                            "tokenizer_config.json; engine flow)")
    parser.add_argument("--hf", help="Llama-compatible HF export (--backend llmapi)")
    parser.add_argument("--backend-source", help="--backend llmapi: the TensorRT-LLM release's "
                        "triton_backend/all_models/llmapi/tensorrt_llm/1/ (model.py, helpers.py)")
    parser.add_argument("--tp", type=int, default=1, help="llmapi: tensor_parallel_size")
    parser.add_argument("--pp", type=int, default=1, help="llmapi: pipeline_parallel_size")
    parser.add_argument("--unchecked-paths", action="store_true",
                        help="write --engine/--tokenizer/--hf as given, without checking them")
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--decoupled", action="store_true",
                        help="decoupled transaction policy (streaming)")
    parser.add_argument("--bls", action="store_true", help="also write tensorrt_llm_bls")
    parser.add_argument("--accumulate-tokens", action="store_true",
                        help="BLS streaming: each response carries the whole text so far")
    parser.add_argument("--max-queue-delay-us", type=int, default=0)
    parser.add_argument("--max-beam-width", type=int, default=1)
    parser.add_argument("--batching-strategy", default="inflight_fused_batching",
                        choices=("inflight_fused_batching", "V1"))
    parser.add_argument("--batch-scheduler-policy", default="guaranteed_no_evict",
                        choices=("guaranteed_no_evict", "max_utilization"))
    parser.add_argument("--kv-cache-free-gpu-mem-fraction", type=float, default=0.9)
    parser.add_argument("--include-input-in-output", action="store_true",
                        help="text_output starts with the prompt (exclude_input_in_output=false)")
    parser.add_argument("--enable-kv-cache-reuse", action="store_true")
    parser.add_argument("--enable-chunked-context", action="store_true")
    parser.add_argument("--logits-datatype", default="TYPE_FP32",
                        choices=("TYPE_FP32", "TYPE_FP16", "TYPE_BF16"))
    parser.set_defaults(func=run)
