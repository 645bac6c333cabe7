"""`nemo-exaone info PRESET`: an architecture preset's configuration and exact size."""

from __future__ import annotations

import argparse
import json


def register(subparsers) -> None:
    from nemo_exaone.config.presets import PRESET_NAMES

    parser = subparsers.add_parser(
        "info", help="show an architecture preset and its exact parameter count",
        description="Print an EXAONE preset's HF configuration and the exact parameter count, "
        "counted from the Megatron-Core model built on the meta device (no memory used).")
    parser.add_argument("preset", choices=PRESET_NAMES, help="architecture preset")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from nemo_exaone.config.presets import get_preset
    from nemo_exaone.model.params import count_parameters

    arch = get_preset(args.preset)
    counts = count_parameters(arch)
    if args.json:
        print(json.dumps({"preset": args.preset, **counts, "hf_config": arch.to_hf_config()}))
        return 0
    print(f"preset {args.preset}")
    for key, value in arch.to_hf_config().items():
        print(f"  {key:32s} {value}")
    print(f"parameters {counts['num_parameters']:,}")
    for key, value in counts.items():
        if key != "num_parameters":
            print(f"  {key:32s} {value:,}")
    return 0
