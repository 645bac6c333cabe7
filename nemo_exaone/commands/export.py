"""``nemo-exaone export``: checkpoints and repositories for serving stacks.

Each target lives in its own module exposing ``register(sub)`` (TensorRT-LLM engine-flow
checkpoints, Triton model repositories); this file only groups them.
"""

from __future__ import annotations

import argparse
import importlib

EXPORT_TARGETS: tuple[str, ...] = (
    "nemo_exaone.commands.export_trtllm",
    "nemo_exaone.commands.export_triton",
)


def register(subparsers: argparse._SubParsersAction) -> None:
    export = subparsers.add_parser(
        "export", help="export to serving formats (TensorRT-LLM, Triton)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = export.add_subparsers(dest="target", metavar="TARGET")
    sub.required = True
    for module in EXPORT_TARGETS:
        importlib.import_module(module).register(sub)
