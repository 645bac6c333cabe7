"""What a Megatron checkpoint directory records beside Megatron's own files, and the checks on it.

``nemo_exaone.json`` (every checkpoint: converted or trained) records the architecture as an
HF ``config.json`` dict (exact round trip through :class:`ExaoneArch`), so a later stage
rebuilds the model without being told the sizes and refuses a checkpoint of another
architecture with a message naming the differing fields. ``nemo_exaone_training.json``
(training checkpoints only) adds where the run stood: step, layout, contents.
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
TRAINING_METADATA_NAME = "nemo_exaone_training.json"
TRAINING_FORMAT = "nemo_exaone.training.checkpoint/1"

# Fields that change the tensors or the computation; a checkpoint must agree on all of them.
ARCH_FIELDS: tuple[str, ...] = (
    "num_layers", "hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim",
    "intermediate_size", "vocab_size", "tie_word_embeddings", "rope_theta", "rope_scaling",
    "layer_norm_epsilon", "activation_function",
)
# Fields that fix tensor shapes: every load needs them equal.
SHAPE_FIELDS: tuple[str, ...] = (
    "num_layers", "hidden_size", "num_attention_heads", "num_key_value_heads",
    "intermediate_size", "vocab_size", "head_dim", "tie_word_embeddings",
)
# Fields a new stage may change (context extension); a resume must keep them.
STAGE_MUTABLE_FIELDS: tuple[str, ...] = (
    "max_position_embeddings", "rope_theta", "rope_scaling", "layer_norm_epsilon",
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


def read_training_metadata(directory: str | os.PathLike) -> dict[str, Any]:
    """``nemo_exaone_training.json`` of a training checkpoint (error naming it if unreadable)."""
    path = Path(directory) / TRAINING_METADATA_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing: {directory} is not a complete training "
                              "checkpoint") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is unreadable (truncated or corrupt: {exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("train_state"), dict) \
            or not isinstance(data["train_state"].get("step"), int):
        raise CheckpointError(f"{path} has no train_state.step (corrupt)")
    return data


def read_checkpoint_arch(directory: str | os.PathLike) -> ExaoneArch:
    """The architecture a checkpoint was written for (to rebuild its model).

    From ``nemo_exaone.json``; training checkpoints written before every checkpoint carried
    it keep theirs in ``nemo_exaone_training.json`` (``arch``), which is read instead. A run
    directory or its ``checkpoints/`` folder means its latest intact checkpoint.
    """
    from nemo_exaone.checkpoint.locate import is_checkpoint_dir, locate_checkpoint

    path = Path(directory)
    if path.is_dir() and not is_checkpoint_dir(path):
        path = directory = locate_checkpoint(path).path
    if not (path / METADATA_NAME).exists() and (path / TRAINING_METADATA_NAME).exists():
        saved = read_training_metadata(path).get("arch")
        if not isinstance(saved, dict):
            raise CheckpointError(f"{path / TRAINING_METADATA_NAME} records no architecture")
        return ExaoneArch.from_hf_config({"model_type": "exaone", **saved})
    return read_metadata(directory).arch()


def arch_differences(expected: ExaoneArch, found: ExaoneArch) -> list[str]:
    """``field: expected X, found Y`` for each architecture field that differs."""
    return [f"{name}: expected {getattr(expected, name)!r}, found {getattr(found, name)!r}"
            for name in ARCH_FIELDS if not _same(getattr(expected, name), getattr(found, name))]


def check_arch_compatible(found: ExaoneArch, expected: ExaoneArch, where: str | os.PathLike, *,
                          purpose: str) -> list[str]:
    """Refuse a checkpoint ``found`` that cannot serve this run's ``expected`` architecture.

    ``purpose``: ``load`` (every architecture field equal), ``resume`` (shapes, RoPE, context
    length and norm epsilon equal) or ``init`` (shapes equal; a new stage may change RoPE and
    context length: those changes are returned, ``old -> new``).
    """
    fields = {"load": ARCH_FIELDS, "resume": SHAPE_FIELDS + STAGE_MUTABLE_FIELDS,
              "init": SHAPE_FIELDS}[purpose]
    bad = [f"{f}: checkpoint {getattr(found, f)!r} vs this run {getattr(expected, f)!r}"
           for f in fields if not _same(getattr(found, f), getattr(expected, f))]
    if bad:
        what = {"load": "be loaded into this model", "resume": "resume this run",
                "init": "initialise this stage"}[purpose]
        raise CheckpointError(
            f"checkpoint {where} was written for a different architecture and cannot {what}: "
            + "; ".join(bad) + ". Select the matching model.preset / model.arch overrides"
            + (" (only RoPE and context length may change between stages)"
               if purpose == "init" else ""))
    return [f"{f}: {getattr(found, f)!r} -> {getattr(expected, f)!r}"
            for f in STAGE_MUTABLE_FIELDS if not _same(getattr(found, f), getattr(expected, f))]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and float(a) == float(b)
    return a == b


def check_same_arch(expected: ExaoneArch, found: ExaoneArch, where: str) -> None:
    diffs = arch_differences(expected, found)
    if diffs:
        raise CheckpointError(f"{where} has a different architecture: " + "; ".join(diffs))
