"""``nemo-exaone convert``: HF <-> Megatron-Core checkpoint conversion.

Run it as a plain single process (not under torchrun): conversion is I/O bound, streams a
few tensors at a time, and writes a TP/PP-agnostic distributed checkpoint that a torchrun
training job of any layout loads.
"""

from __future__ import annotations

import argparse
import importlib

from nemo_exaone.checkpoint.dtypes import DTYPE_CHOICES
from nemo_exaone.commands.arguments import add_checkpoint, add_output_directory

EXTRA_CONVERSIONS: tuple[str, ...] = (
    "nemo_exaone.commands.convert_llama",
    "nemo_exaone.commands.convert_nemo",
)


def _hf_to_mcore(args: argparse.Namespace) -> int:
    from nemo_exaone.checkpoint.hf_to_mcore import convert_hf_to_mcore

    report = convert_hf_to_mcore(
        args.hf, args.out, preset=args.preset, tensor_parallel=args.tp,
        pipeline_parallel=args.pp, dtype=args.dtype, overwrite=args.overwrite,
        progress=False if args.quiet else None)
    print(report.summary())
    return 0


def _mcore_to_hf(args: argparse.Namespace) -> int:
    from nemo_exaone.checkpoint.locate import locate_checkpoint
    from nemo_exaone.checkpoint.mcore_to_hf import convert_mcore_to_hf

    found = locate_checkpoint(args.ckpt)  # a run directory, its checkpoints/ or iter_N
    print(found.note, flush=True)
    export = convert_mcore_to_hf
    if args.arch == "llama":  # EXAONE 3.x as LlamaForCausalLM (4.0 refused, naming why)
        from nemo_exaone.export.llama_hf import export_llama_from_mcore

        export = export_llama_from_mcore
    report = export(
        found.path, args.out, tokenizer_dir=args.tokenizer, hf_config=args.hf_config,
        max_shard_size=args.max_shard_size, dtype=args.dtype, overwrite=args.overwrite,
        progress=False if args.quiet else None)
    print(report.summary())
    return 0


def _common(parser: argparse.ArgumentParser) -> None:
    add_output_directory(parser, "every shard present and complete")
    parser.add_argument("--dtype", choices=DTYPE_CHOICES, default="keep",
                        help="cast weights (default: keep the source dtype, bit-exact)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def register(subparsers: argparse._SubParsersAction) -> None:
    convert = subparsers.add_parser(
        "convert", help="convert checkpoints between HF and Megatron-Core formats",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = convert.add_subparsers(dest="direction", metavar="DIRECTION")
    sub.required = True

    to_mcore = sub.add_parser(
        "hf-to-mcore", help="HF EXAONE 3.x (safetensors) -> Megatron distributed checkpoint")
    to_mcore.add_argument("--hf", required=True, help="HF checkpoint directory")
    to_mcore.add_argument("--tp", type=int, default=1,
                          help="tensor parallel size you will train with (validated only: "
                               "the checkpoint loads at any TP/PP)")
    to_mcore.add_argument("--pp", type=int, default=1, help="pipeline parallel size (ditto)")
    to_mcore.add_argument("--preset", default=None,
                          help="architecture preset the checkpoint must match (or that stands "
                               "in for a missing config.json)")
    _common(to_mcore)
    to_mcore.set_defaults(func=_hf_to_mcore)

    to_hf = sub.add_parser(
        "mcore-to-hf", help="Megatron distributed checkpoint -> HF EXAONE 3.x (safetensors)")
    add_checkpoint(to_hf)
    to_hf.add_argument("--tokenizer", default=None,
                       help="directory whose tokenizer files replace the checkpoint's "
                            "(default: the tokenizer the checkpoint carries from import or "
                            "training; for older checkpoints, their recorded HF source)")
    to_hf.add_argument("--hf-config", default=None,
                       help="config.json to use for checkpoints without nemo_exaone.json")
    to_hf.add_argument("--max-shard-size", default="5GB", help="largest shard (default 5GB)")
    to_hf.add_argument("--arch", choices=("exaone", "llama"), default="exaone",
                       help="exaone (default): the checkpoint's own HF class (ExaoneForCausalLM "
                            "for 3.x, Exaone4ForCausalLM for 4.0); llama: EXAONE 3.x as "
                            "LlamaForCausalLM, which vLLM, SGLang and TensorRT-LLM's PyTorch "
                            "flow load without remote code (4.0 is refused)")
    _common(to_hf)
    to_hf.set_defaults(func=_mcore_to_hf)

    # Conversions owned by their own modules (Llama-compatible export, NeMo 2), each exposing
    # ``register(sub, common)``; ``common`` adds the shared --out/--dtype/--overwrite/--quiet.
    for module in EXTRA_CONVERSIONS:
        importlib.import_module(module).register(sub, _common)
