"""Check that a Megatron distributed checkpoint directory is complete before it is published.

A ``torch_dist`` checkpoint is Megatron's ``metadata.json`` + ``common.pt`` plus DCP's
``.metadata``, whose ``storage_data`` names, for every stored item, the ``__<rank>_<n>.distcp``
file, offset and length that hold it. A directory that lacks one of those files (a writer
that died or raced another) loads only as far as the first missing shard, so both writers
(the converter and the training loop) run :func:`verify_dist_checkpoint` on their temporary
directory and publish it only when it passes.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

from nemo_exaone.checkpoint.errors import CheckpointError

__all__ = ["verify_dist_checkpoint", "verify_hf_checkpoint", "MEGATRON_FILES"]

# Written by ``dist_checkpointing.save`` (and by the converter, which writes the same files).
# megatron-core >= 0.19 keeps the common state inside DCP (a "common_state" object) instead
# of common.pt; common.pt is then required only when DCP's metadata has no such object.
MEGATRON_FILES = ("metadata.json", "common.pt", ".metadata")
COMMON_STATE_KEY = "common_state"


def _storage_extents(directory: Path) -> dict[str, int]:
    """``{relative file name: bytes it must hold at least}`` from DCP's ``.metadata``."""
    from torch.distributed.checkpoint import FileSystemReader

    metadata_file = directory / ".metadata"
    try:
        metadata = FileSystemReader(str(directory)).read_metadata()
    except (pickle.UnpicklingError, EOFError, AttributeError, ValueError, TypeError,
            IndexError, ImportError) as exc:
        raise CheckpointError(f"{metadata_file}: unreadable DCP metadata "
                              f"({type(exc).__name__}: {exc}); the file is truncated or "
                              "corrupt") from exc
    storage = getattr(metadata, "storage_data", None)
    keys = getattr(metadata, "state_dict_metadata", {}) or {}
    if not any(str(k).startswith(COMMON_STATE_KEY) for k in keys) \
            and not (directory / "common.pt").is_file():
        raise CheckpointError(f"{directory / 'common.pt'} is missing: {directory} is not a "
                              "complete Megatron distributed checkpoint")
    if not isinstance(storage, dict):
        raise CheckpointError(f"{metadata_file}: no storage_data (not written by a "
                              "file-system DCP writer)")
    needed: dict[str, int] = {}
    for index, info in storage.items():
        name = getattr(info, "relative_path", None)
        if not isinstance(name, str) or not name or os.path.isabs(name) or ".." in Path(name).parts:
            raise CheckpointError(f"{metadata_file}: item {index} names an invalid storage "
                                  f"file {name!r}")
        end = int(getattr(info, "offset", 0)) + int(getattr(info, "length", 0))
        needed[name] = max(needed.get(name, 0), end)
    return needed


def verify_dist_checkpoint(directory: str | os.PathLike) -> dict[str, int]:
    """Raise :class:`CheckpointError` unless every file the checkpoint needs is present.

    Checked: Megatron's ``metadata.json`` and ``common.pt``, DCP's ``.metadata``, and every
    data file that ``.metadata`` lists, each at least as long as the last byte range stored
    in it (a truncated shard fails here, not half-way through a load). Returns the data
    files and their sizes.
    """
    path = Path(directory)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint directory {path} does not exist")
    for name in MEGATRON_FILES:
        if name != "common.pt" and not (path / name).is_file():  # common.pt: see above
            raise CheckpointError(f"{path / name} is missing: {path} is not a complete "
                                  "Megatron distributed checkpoint")
    sizes: dict[str, int] = {}
    for name, needed in sorted(_storage_extents(path).items()):
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"{file} is missing (listed in {path / '.metadata'}): the "
                                  "checkpoint is incomplete")
        size = file.stat().st_size
        if size < needed:
            raise CheckpointError(f"{file} holds {size} bytes, but {path / '.metadata'} "
                                  f"stores data up to byte {needed}: the file is truncated")
        sizes[name] = size
    return sizes


def verify_hf_checkpoint(directory: str | os.PathLike) -> None:
    """Raise unless an HF export is complete: ``config.json`` and every safetensors shard
    the index lists, each holding every byte its header promises."""
    from nemo_exaone.checkpoint.safetensors_io import SafetensorsSource

    path = Path(directory)
    if not (path / "config.json").is_file():
        raise CheckpointError(f"{path / 'config.json'} is missing: the export is incomplete")
    SafetensorsSource(path)  # checks the index against the shards and each shard's size
