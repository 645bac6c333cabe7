"""A checkpoint's HF identity, carried from import through every training stage to export.

Import (``hf-to-mcore``) records the source's config.json, generation_config.json, tokenizer
files and remote code under ``hf_identity/`` in the checkpoint, listed in ``nemo_exaone.json``
(``extra.hf_identity``). Every checkpoint a training run writes carries the identity of the
checkpoint it started from (or resumed), or, for a run from a preset, the tokenizer it trained
with; export writes it back. The architecture itself travels in ``nemo_exaone.json``'s
``hf_config`` (what the run changed, e.g. ``max_position_embeddings`` after context extension, is
there), so export lists exactly the fields that differ from the imported config.json.

``model.preset=from_checkpoint`` takes the architecture recorded in ``init.checkpoint``; an
explicit preset that disagrees with it is refused, naming every differing field.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nemo_exaone.checkpoint.errors import CheckpointError
from nemo_exaone.checkpoint.exaone_hf import (
    IDENTITY_DIR,
    copy_identity,
    identity_files,
    tokenizer_files,
)
from nemo_exaone.checkpoint.metadata import (
    ARCH_FIELDS,
    METADATA_NAME,
    SHAPE_FIELDS,
    read_metadata,
)
from nemo_exaone.config.errors import ConfigError
from nemo_exaone.config.presets import ExaoneArch

FROM_CHECKPOINT = "from_checkpoint"
# What an explicit preset must agree on with the checkpoint it starts from (unless the run
# overrides a field on purpose, e.g. RoPE and context length in a continued stage; shapes
# never).
IDENTITY_FIELDS: tuple[str, ...] = ARCH_FIELDS + (
    "max_position_embeddings", "bos_token_id", "eos_token_id", "pad_token_id")


@dataclass(frozen=True)
class IdentitySource:
    """Files to carry into a checkpoint: ``files`` (relative) under ``directory``."""

    directory: Path
    files: tuple[str, ...]
    origin: str  # where they came from, for the record


def recorded_identity(checkpoint: str | os.PathLike) -> IdentitySource | None:
    """The identity a checkpoint carries, or None (older checkpoints, preset-born runs
    without a tokenizer)."""
    path = Path(checkpoint)
    if not (path / METADATA_NAME).exists():
        return None
    entry = (read_metadata(path).extra or {}).get("hf_identity")
    if not entry:
        return None
    directory = path / entry.get("dir", IDENTITY_DIR)
    files = tuple(entry.get("files", ()))
    missing = [f for f in files if not (directory / f).is_file()]
    if missing:
        raise CheckpointError(f"{path}: recorded HF identity file(s) {', '.join(missing)} are "
                              f"missing from {directory}")
    return IdentitySource(directory, files, entry.get("origin", str(path)))


def identity_for_run(checkpoint: str | os.PathLike | None,
                     tokenizer_dir: str | os.PathLike | None) -> IdentitySource | None:
    """What a run's checkpoints carry: the identity of the checkpoint it resumes or starts
    from, else the tokenizer it trains with (a run from a preset), else nothing."""
    if checkpoint is not None:
        found = recorded_identity(checkpoint)
        if found is not None:
            return found
    if tokenizer_dir is not None and Path(tokenizer_dir).is_dir():
        files = tokenizer_files(identity_files(tokenizer_dir))
        if files:
            return IdentitySource(Path(tokenizer_dir), tuple(files),
                                  f"tokenizer {Path(tokenizer_dir).absolute()}")
    return None


def write_identity(checkpoint_dir: str | os.PathLike, source: IdentitySource | None) -> None:
    """Copy ``source`` into ``checkpoint_dir`` (before it is published) and list it in its
    ``nemo_exaone.json``; nothing when ``source`` is None."""
    if source is None:
        return
    target = Path(checkpoint_dir)
    copy_identity(source.directory, target / IDENTITY_DIR, list(source.files))
    path = target / METADATA_NAME
    raw: dict[str, Any] = json.loads(path.read_text())
    raw.setdefault("extra", {})["hf_identity"] = {
        "dir": IDENTITY_DIR, "files": list(source.files), "origin": source.origin}
    path.write_text(json.dumps(raw, indent=2, sort_keys=True) + "\n")


def checkpoint_arch(init_checkpoint: str | os.PathLike) -> ExaoneArch:
    """The architecture recorded in ``init_checkpoint`` (a run directory, its checkpoints/
    folder or an iter_N directory)."""
    from nemo_exaone.checkpoint.locate import locate_checkpoint
    from nemo_exaone.checkpoint.metadata import read_checkpoint_arch

    return read_checkpoint_arch(locate_checkpoint(init_checkpoint).path)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and float(a) == float(b)
    return a == b


def check_preset_matches_checkpoint(arch: ExaoneArch, init_checkpoint: str | os.PathLike,
                                    overridden: set[str]) -> None:
    """Refuse a preset (plus overrides) that disagrees with the checkpoint it starts from on
    any field of :data:`IDENTITY_FIELDS`, naming every one. A field the run overrides may
    differ unless it fixes tensor shapes (a new stage starts from the checkpoint's weights)."""
    found = checkpoint_arch(init_checkpoint)
    free = overridden - set(SHAPE_FIELDS)
    diffs = [f"{f}: preset {arch.name!r} has {getattr(arch, f)!r}, checkpoint has "
             f"{getattr(found, f)!r}" for f in IDENTITY_FIELDS
             if f not in free and not _same(getattr(arch, f), getattr(found, f))]
    if diffs:
        raise ConfigError(
            f"model.preset={arch.name!r} does not describe init.checkpoint={init_checkpoint}: "
            + "; ".join(diffs) + f". Use model.preset={FROM_CHECKPOINT} to take the "
            "checkpoint's architecture (model.arch.* still changes fields on purpose)")
