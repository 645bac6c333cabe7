"""``nemo-exaone convert hf-to-nemo`` / ``nemo-to-hf`` (HF EXAONE <-> NeMo 2) and
``nemo-to-mcore`` / ``mcore-to-nemo`` (NeMo 2 <-> our Megatron checkpoints).

Thin wrappers over the connectors that ``llm.import_ckpt`` / ``llm.export_ckpt`` use
(:mod:`nemo_exaone.nemo.connectors`); they need NeMo 2 (``pip install 'nemo-exaone[nemo]'``).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from nemo_exaone.commands.arguments import add_checkpoint, add_output_directory


def _nemo_missing(args: argparse.Namespace) -> int | None:
    """2 with the reason printed when NeMo 2 is absent (the error names the extra)."""
    from nemo_exaone.runtime.nemo_compat import require_nemo

    try:
        require_nemo()
    except ImportError as exc:
        print(f"nemo-exaone convert {args.direction}: error: {exc}", file=sys.stderr)
        return 2
    return None


def _conversion(function: str, source: str, note: str = "", options: tuple[str, ...] = ()):
    """The handler of a conversion ``--<source> -> --out`` done by ``function`` (a
    ``module:name`` imported only when it runs, so the CLI loads without NeMo), passing the
    flags in ``options`` as keywords."""
    def run(args: argparse.Namespace) -> int:
        if (missing := _nemo_missing(args)) is not None:
            return missing
        module, _, name = function.partition(":")
        convert = getattr(importlib.import_module(module), name)
        given = getattr(args, source)
        out = convert(given, args.out, overwrite=args.overwrite,
                      **{option: getattr(args, option) for option in options})
        print(f"{args.direction}: {given} -> {out}{note}")
        return 0
    return run


_hf_to_nemo = _conversion("nemo_exaone.nemo.connectors:import_hf_to_nemo", "hf",
                          " (NeMo 2 checkpoint: weights/, context/, hf_identity/)")
_nemo_to_hf = _conversion("nemo_exaone.nemo.connectors:export_nemo_to_hf", "nemo",
                          options=("max_shard_size",))
_nemo_to_mcore = _conversion("nemo_exaone.nemo.weights:nemo_to_mcore", "nemo",
                             " (loads as a stage's init weights, any TP/PP)")


def _mcore_to_nemo(args: argparse.Namespace) -> int:
    if (missing := _nemo_missing(args)) is not None:
        return missing
    from nemo_exaone.checkpoint.locate import locate_checkpoint
    from nemo_exaone.nemo.weights import mcore_to_nemo

    found = locate_checkpoint(args.ckpt)  # a run directory, its checkpoints/ or iter_N
    print(found.note, flush=True)
    out = mcore_to_nemo(found.path, args.out, overwrite=args.overwrite)
    print(f"mcore-to-nemo: {found.path} -> {out}")
    return 0


def _outputs(parser: argparse.ArgumentParser) -> None:
    # --dtype does not apply: NeMo keeps one params_dtype, and these conversions are bit-exact.
    add_output_directory(parser)


def register(sub, common) -> None:  # noqa: ARG001 - no --dtype/--quiet here (bit-exact)
    """Add the four NeMo 2 conversions under ``nemo-exaone convert``."""
    to_nemo = sub.add_parser(
        "hf-to-nemo", help="HF EXAONE 3.x -> NeMo 2 checkpoint (needs the 'nemo' extra)")
    to_nemo.add_argument("--hf", required=True, help="HF checkpoint directory")
    _outputs(to_nemo)
    to_nemo.set_defaults(func=_hf_to_nemo)

    to_hf = sub.add_parser(
        "nemo-to-hf", help="NeMo 2 EXAONE checkpoint -> HF EXAONE 3.x (needs the 'nemo' extra)")
    to_hf.add_argument("--nemo", required=True,
                       help="NeMo 2 checkpoint directory (holding weights/ and context/)")
    to_hf.add_argument("--max-shard-size", default="5GB", help="largest shard (default 5GB)")
    _outputs(to_hf)
    to_hf.set_defaults(func=_nemo_to_hf)

    to_mcore = sub.add_parser(
        "nemo-to-mcore", help="NeMo 2 EXAONE checkpoint -> our Megatron checkpoint (a stage's "
        "init weights; needs the 'nemo' extra)")
    to_mcore.add_argument("--nemo", required=True, help="NeMo 2 checkpoint directory")
    _outputs(to_mcore)
    to_mcore.set_defaults(func=_nemo_to_mcore)

    from_mcore = sub.add_parser(
        "mcore-to-nemo", help="our Megatron checkpoint (converted or trained) -> NeMo 2 "
        "checkpoint (needs the 'nemo' extra)")
    add_checkpoint(from_mcore)
    _outputs(from_mcore)
    from_mcore.set_defaults(func=_mcore_to_nemo)
