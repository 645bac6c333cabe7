"""``nemo-exaone convert hf-to-llama``: an EXAONE 3.x HF directory as ``LlamaForCausalLM``.

The Megatron-checkpoint side of the same export is ``convert mcore-to-hf --arch llama``; both
write through :mod:`nemo_exaone.export.llama_hf`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable


def _hf_to_llama(args: argparse.Namespace) -> int:
    from nemo_exaone.export.llama_hf import export_llama_from_hf

    report = export_llama_from_hf(
        args.hf, args.out, tokenizer_dir=args.tokenizer, max_shard_size=args.max_shard_size,
        dtype=args.dtype, overwrite=args.overwrite, progress=False if args.quiet else None)
    print(report.summary())
    return 0


def register(sub: argparse._SubParsersAction,
             common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add ``hf-to-llama`` to ``convert``'s directions (``common`` adds --out/--dtype/...)."""
    parser = sub.add_parser(
        "hf-to-llama",
        help="HF EXAONE 3.x (ExaoneForCausalLM, any config vintage) -> LlamaForCausalLM "
             "(renamed tensors, Llama config, tokenizer and chat template; no remote code)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hf", required=True, help="EXAONE 3.x HF checkpoint directory "
                        "(EXAONE 4.0 is refused: export its native Exaone4ForCausalLM)")
    parser.add_argument("--tokenizer", default=None,
                        help="directory whose tokenizer files replace the source's")
    parser.add_argument("--max-shard-size", default="5GB", help="largest shard (default 5GB)")
    common(parser)
    parser.set_defaults(func=_hf_to_llama)
