"""The `nemo-exaone` command line.

Each command group lives in its own module exposing ``register(subparsers)``; this file only
wires them together, so importing the CLI stays cheap (heavy imports happen inside handlers).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings

from nemo_exaone.config.errors import ConfigError, InputError
from nemo_exaone.runtime.outputs import OutputLockedError  # stdlib only: cheap

# Modules that contribute sub-commands, in the order they appear in --help.
COMMAND_MODULES: tuple[str, ...] = (
    "nemo_exaone.commands.info",
    "nemo_exaone.commands.convert",
    "nemo_exaone.commands.data",
    "nemo_exaone.commands.train",
    "nemo_exaone.commands.generate",
    "nemo_exaone.commands.align",
    "nemo_exaone.commands.export",
    "nemo_exaone.commands.serve",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nemo-exaone",
        description="EXAONE models on Megatron-Core: inspect presets, convert checkpoints, "
        "prepare data, train, generate.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    # Megatron-Core warns at import about optional kernels (Apex, TE) it falls back from;
    # on the command line that is noise, not news.
    warnings.filterwarnings("ignore", module=r"megatron\..*")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"nemo-exaone {args.command}: config error: {exc}", file=sys.stderr)
        return 2
    except (InputError, FileNotFoundError, FileExistsError, OutputLockedError) as exc:
        # User-facing errors (bad input) are printed without a traceback.
        print(f"nemo-exaone {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        # Commands whose user errors are all ConfigError/InputError (``strict_errors``) let
        # any other ValueError through with its traceback: it is a bug, not bad input.
        if getattr(args, "strict_errors", False):
            raise
        print(f"nemo-exaone {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
