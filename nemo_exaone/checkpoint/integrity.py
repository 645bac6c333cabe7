"""Is a Megatron distributed checkpoint directory whole? Checked before publishing and resuming.

``dist_checkpointing`` (torch_dist backend) writes ``metadata.json`` (Megatron's backend
config), ``common.pt`` (the non-sharded state) and DCP's ``.metadata``, which lists, for every
stored chunk, the ``.distcp`` file that holds it with offset and length. A copy cut short, a
file lost in a transfer or a converter that died between files all show up here as a named
file that is missing, too short or unreadable; nothing is loaded into a model first.

Only sizes and the small files are read (cheap at any model size); bytes flipped inside a
``.distcp`` are not detected here (DCP stores no checksums) but fail at load time.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

from nemo_exaone.checkpoint.errors import CheckpointError

MEGATRON_CONFIG = "metadata.json"
COMMON_STATE = "common.pt"
DCP_METADATA = ".metadata"


def dcp_storage_files(directory: str | os.PathLike) -> dict[str, int]:
    """Every file DCP's ``.metadata`` lists, with the bytes it must hold at least."""
    path = Path(directory) / DCP_METADATA
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: {directory} is not a complete distributed "
                              "checkpoint")
    try:
        with open(path, "rb") as handle:
            metadata = pickle.load(handle)  # what torch's FileSystemReader.read_metadata does
        storage = metadata.storage_data
    except Exception as exc:  # truncated or garbled pickle: any unpickling error
        raise CheckpointError(f"{path} is unreadable (truncated or corrupt: {exc!r})") from exc
    if not isinstance(storage, dict):
        raise CheckpointError(f"{path} lists no storage files (corrupt)")
    needed: dict[str, int] = {}
    for info in storage.values():
        end = int(info.offset) + int(info.length)
        needed[info.relative_path] = max(needed.get(info.relative_path, 0), end)
    return needed


def verify_dist_checkpoint(directory: str | os.PathLike, *, load_common: bool = True) -> None:
    """Raise :class:`CheckpointError` naming the first file of ``directory`` that is missing,
    shorter than DCP's ``.metadata`` says, or unreadable (``metadata.json``, ``common.pt``)."""
    root = Path(directory)
    if not root.is_dir():
        raise CheckpointError(f"checkpoint directory {root} does not exist")
    config = root / MEGATRON_CONFIG
    try:
        backend = json.loads(config.read_text(encoding="utf-8"))
        if not isinstance(backend, dict) or "sharded_backend" not in backend:
            raise ValueError("no 'sharded_backend' field")
    except FileNotFoundError:
        raise CheckpointError(f"{config} is missing: {root} is not a complete Megatron "
                              "checkpoint") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{config} is unreadable (truncated or corrupt: {exc})") from exc
    for name, size in sorted(dcp_storage_files(root).items()):
        path = root / name
        if not path.is_file():
            raise CheckpointError(f"{path} is missing (listed in {root / DCP_METADATA})")
        found = path.stat().st_size
        if found < size:
            raise CheckpointError(f"{path} is truncated: {found} bytes, {root / DCP_METADATA} "
                                  f"lists data up to byte {size}")
    common = root / COMMON_STATE
    if not common.is_file():
        raise CheckpointError(f"{common} is missing: {root} is not a complete Megatron "
                              "checkpoint")
    if load_common:
        import torch

        try:
            torch.load(common, map_location="cpu", weights_only=False)
        except Exception as exc:  # torch raises several kinds for a cut or garbled archive
            raise CheckpointError(f"{common} is unreadable (truncated or corrupt: "
                                  f"{type(exc).__name__}: {exc})") from exc
