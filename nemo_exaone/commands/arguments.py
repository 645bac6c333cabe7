"""Command-line arguments several commands share, spelled once."""

from __future__ import annotations

import argparse

CHECKPOINT_HELP = ("a checkpoint (iter_N or converted) directory, a training run directory or "
                   "its checkpoints/ folder (their latest intact one)")


def add_output_directory(parser: argparse.ArgumentParser, verified: str = "") -> None:
    """``--out`` and ``--overwrite`` of a conversion published by ``atomic_directory``
    (``verified``: what the check before publishing covers, for the help)."""
    parser.add_argument("--out", required=True,
                        help="output directory: written under a temporary name, verified"
                        f"{f' ({verified})' if verified else ''}, then renamed into place; a "
                        "second conversion to the same --out is refused while this one runs")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing non-empty output directory (never the "
                        "source: an --out that is the source or a folder holding it is refused)")


def add_checkpoint(parser: argparse.ArgumentParser) -> None:
    """``--ckpt``, resolved by ``checkpoint.locate.locate_checkpoint`` in every command."""
    parser.add_argument("--ckpt", required=True, help=CHECKPOINT_HELP)
