"""``nemo-exaone convert hf-to-nemo`` / ``nemo-to-hf``: HF EXAONE <-> NeMo 2 checkpoints.

Thin wrappers over the connectors that ``llm.import_ckpt`` / ``llm.export_ckpt`` use
(:mod:`nemo_exaone.nemo.connectors`); they need NeMo 2 (``pip install 'nemo-exaone[nemo]'``).
"""

from __future__ import annotations

import argparse
import sys


def _nemo_missing(args: argparse.Namespace) -> int | None:
    """2 with the reason printed when NeMo 2 is absent (the error names the extra)."""
    from nemo_exaone.runtime.nemo_compat import require_nemo

    try:
        require_nemo()
    except ImportError as exc:
        print(f"nemo-exaone convert {args.direction}: error: {exc}", file=sys.stderr)
        return 2
    return None


def _hf_to_nemo(args: argparse.Namespace) -> int:
    if (missing := _nemo_missing(args)) is not None:
        return missing
    from nemo_exaone.nemo.connectors import import_hf_to_nemo

    out = import_hf_to_nemo(args.hf, args.out, overwrite=args.overwrite)
    print(f"hf-to-nemo: {args.hf} -> {out} (NeMo 2 checkpoint: weights/, context/, hf_identity/)")
    return 0


def _nemo_to_hf(args: argparse.Namespace) -> int:
    if (missing := _nemo_missing(args)) is not None:
        return missing
    from nemo_exaone.nemo.connectors import export_nemo_to_hf

    out = export_nemo_to_hf(args.nemo, args.out, overwrite=args.overwrite,
                            max_shard_size=args.max_shard_size)
    print(f"nemo-to-hf: {args.nemo} -> {out}")
    return 0


def _outputs(parser: argparse.ArgumentParser) -> None:
    # --dtype does not apply: NeMo keeps one params_dtype, and these conversions are bit-exact.
    parser.add_argument("--out", required=True,
                        help="output directory: written under a temporary name, verified, then "
                        "renamed into place; a second conversion to the same --out is refused "
                        "while this one runs")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing non-empty output directory (never the source)")


def register(sub, common) -> None:  # noqa: ARG001 - no --dtype/--quiet here (bit-exact)
    """Add ``hf-to-nemo`` and ``nemo-to-hf`` under ``nemo-exaone convert``."""
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
