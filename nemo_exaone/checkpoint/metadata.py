"""``nemo_exaone.json``: what a Megatron checkpoint directory holds, beside Megatron's own files.

It records the architecture as an HF ``config.json`` dict (exact round trip through
:class:`ExaoneArch`), so a later stage rebuilds the model without being told the sizes and
refuses a checkpoint of another architecture with a message naming the differing fields.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nemo_exaone.checkpoint.errors import CheckpointError
from nemo_exaone.config.presets import ExaoneArch

METADATA_NAME = "nemo_exaone.json"
FORMAT_VERSION = 1

# Fields that change the tensors or the computation; a checkpoint must agree on all of them.
ARCH_FIELDS: tuple[str, ...] = (
    "num_layers", "hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim",
    "intermediate_size", "vocab_size", "tie_word_embeddings", "rope_theta", "rope_scaling",
    "layer_norm_epsilon", "activation_function",
)


@dataclass
class CheckpointMetadata:
    hf_config: dict[str, Any]
    dtype: str | None = None
    hf_source_dir: str | None = None
    writer: str = "nemo-exaone"
    megatron_core: str | None = None
    format_version: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def arch(self) -> ExaoneArch:
        return ExaoneArch.from_hf_config(self.hf_config)


def write_metadata(directory: str | os.PathLike, metadata: CheckpointMetadata) -> None:
    path = Path(directory) / METADATA_NAME
    path.write_text(json.dumps(asdict(metadata), indent=2, sort_keys=True) + "\n")


def read_metadata(directory: str | os.PathLike) -> CheckpointMetadata:
    path = Path(directory) / METADATA_NAME
    if not path.exists():
        if not Path(directory).exists():
            raise FileNotFoundError(f"checkpoint directory {directory} does not exist")
        raise FileNotFoundError(
            f"{path} not found: {directory} is not a complete nemo-exaone checkpoint (an "
            "interrupted write leaves a '.NAME.partial' directory instead)")
    try:
        raw = json.loads(path.read_text())
        version = raw.get("format_version")
        if version != FORMAT_VERSION:
            raise CheckpointError(f"{path}: format_version {version!r}, this version of "
                                  f"nemo-exaone reads {FORMAT_VERSION}")
        return CheckpointMetadata(**raw)
    except (json.JSONDecodeError, TypeError) as exc:
        raise CheckpointError(f"{path}: unreadable checkpoint metadata ({exc})") from exc


def read_checkpoint_arch(directory: str | os.PathLike) -> ExaoneArch:
    """The architecture a checkpoint was written for (to rebuild its model)."""
    return read_metadata(directory).arch()


def arch_differences(expected: ExaoneArch, found: ExaoneArch) -> list[str]:
    """``field: expected X, found Y`` for each architecture field that differs."""
    out = []
    for name in ARCH_FIELDS:
        want, got = getattr(expected, name), getattr(found, name)
        if isinstance(want, float) or isinstance(got, float):
            same = want is not None and got is not None and float(want) == float(got)
        else:
            same = want == got
        if not same:
            out.append(f"{name}: expected {want!r}, found {got!r}")
    return out


def check_same_arch(expected: ExaoneArch, found: ExaoneArch, where: str) -> None:
    diffs = arch_differences(expected, found)
    if diffs:
        raise CheckpointError(f"{where} has a different architecture: " + "; ".join(diffs))
