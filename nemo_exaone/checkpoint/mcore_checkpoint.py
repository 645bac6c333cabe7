"""Model weights in Megatron-Core distributed checkpoints: the one place that builds, filters,
loads and applies them (the converter's output, the training loop's checkpoints, every stage).

All functions run on every rank of a job with the model built for that job's TP/PP (VPP
chunks included); ``dist_checkpointing`` reshards, so a checkpoint saved (or converted) in one
layout loads in any other. The sharded state dict has one layout everywhere: ``{"model": ...}``
for one chunk, ``{"model0": ..., "model1": ...}`` with virtual pipeline stages; tensors are
stored under their own (global) keys, so converted and trained checkpoints share them.
Training state (optimizer, scheduler, RNG) is added on top by :mod:`.training_state`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from nemo_exaone.checkpoint.dtypes import hf_dtype_name
from nemo_exaone.checkpoint.errors import CheckpointError
from nemo_exaone.checkpoint.metadata import (
    CheckpointMetadata,
    check_arch_compatible,
    read_checkpoint_arch,
    read_metadata,
    write_metadata,
)
from nemo_exaone.config.presets import ExaoneArch
from nemo_exaone.model.sharding import unwrap

EXTRA_STATE = "_extra_state"


def rank() -> int:
    return torch.distributed.get_rank() if torch.distributed.is_initialized() else 0


def barrier() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.barrier()


def model_sharded_state_dict(model_chunks: list) -> dict[str, Any]:
    """The model's sharded state dict: ``model`` (one chunk) or ``model0``, ``model1``..."""
    chunks = [unwrap(m) for m in model_chunks]
    if len(chunks) == 1:
        return {"model": chunks[0].sharded_state_dict()}
    return {f"model{i}": chunk.sharded_state_dict() for i, chunk in enumerate(chunks)}


def model_dtype_name(model_chunks: list) -> str:
    return hf_dtype_name(next(unwrap(model_chunks[0]).parameters()).dtype)


def write_model_metadata(directory: Path, arch: ExaoneArch, model_chunks: list, *,
                         writer: str, hf_source_dir: str | None = None) -> None:
    """``nemo_exaone.json`` for a checkpoint of ``model_chunks`` (rank 0 calls it)."""
    from nemo_exaone.runtime.versions import megatron_core_version

    write_metadata(directory, CheckpointMetadata(
        hf_config=arch.to_hf_config(), dtype=model_dtype_name(model_chunks),
        hf_source_dir=hf_source_dir, writer=writer, megatron_core=megatron_core_version()))


def save_mcore_checkpoint(
    model_chunks: list,
    ckpt_dir: str | os.PathLike,
    arch: ExaoneArch,
    *,
    hf_source_dir: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Save this job's model weights (all ranks call it) as a checkpoint at ``ckpt_dir``.

    Written under a temporary name unique to this save, verified (every file the DCP
    metadata lists is present with its size) and renamed into place by rank 0.
    """
    from megatron.core import dist_checkpointing

    from nemo_exaone.runtime.outputs import check_output, publish_directory

    target = Path(ckpt_dir).absolute()
    check_output(target, overwrite)  # every rank, so that all of them stop together
    tmp = shared_temporary(target)
    dist_checkpointing.save(model_sharded_state_dict(model_chunks), str(tmp))
    if rank() == 0:
        write_model_metadata(tmp, arch, model_chunks, writer="save_mcore_checkpoint",
                             hf_source_dir=hf_source_dir)
        verify_before_publish(tmp)
        publish_directory(tmp, target)
    barrier()
    return target


def shared_temporary(final: Path) -> Path:
    """A fresh temporary directory for ``final`` whose name rank 0 picks (unique to its
    process) and every rank receives; stale ones of ``final`` from dead processes go first."""
    from nemo_exaone.runtime.outputs import remove_stale_temporaries, temporary_name

    name = [None]
    if rank() == 0:
        final.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(final)
        tmp = temporary_name(final)
        tmp.mkdir()
        name = [str(tmp)]
    if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        torch.distributed.broadcast_object_list(name, src=0)
    return Path(name[0])


def verify_before_publish(directory: Path) -> None:
    """Refuse to publish a checkpoint directory that misses a file its metadata lists."""
    from nemo_exaone.checkpoint.verify import verify_dist_checkpoint

    verify_dist_checkpoint(directory)


# ------------------------------------------------------------------ checks
def _model_arch_differences(model: torch.nn.Module, arch: ExaoneArch) -> list[str]:
    """Compare the sizes a built model has with those a checkpoint records."""
    config = model.config
    pairs = {
        "num_layers": (config.num_layers, arch.num_layers),
        "hidden_size": (config.hidden_size, arch.hidden_size),
        "num_attention_heads": (config.num_attention_heads, arch.num_attention_heads),
        "num_key_value_heads": (config.num_query_groups or config.num_attention_heads,
                                arch.num_key_value_heads),
        "head_dim": (config.kv_channels, arch.head_dim),
        "intermediate_size": (config.ffn_hidden_size, arch.intermediate_size),
        "vocab_size": (model.vocab_size, arch.vocab_size),
        "tie_word_embeddings": (model.share_embeddings_and_output_weights,
                                arch.tie_word_embeddings),
    }
    return [f"{k}: model has {m!r}, checkpoint has {c!r}" for k, (m, c) in pairs.items() if m != c]


def check_checkpoint_matches(model_chunks: list, ckpt_dir: str | os.PathLike,
                             arch: ExaoneArch | None = None) -> CheckpointMetadata:
    """Refuse (naming the fields) a checkpoint written for another architecture."""
    metadata = read_metadata(ckpt_dir)
    found = metadata.arch()
    if arch is not None:
        check_arch_compatible(found, arch, ckpt_dir, purpose="load")
    diffs = _model_arch_differences(unwrap(model_chunks[0]), found)
    if diffs:
        raise CheckpointError(f"checkpoint {ckpt_dir} was written for a different "
                              "architecture: " + "; ".join(diffs))
    return metadata


def stored_keys(ckpt_dir: str | os.PathLike) -> set[str]:
    """Keys DCP's ``.metadata`` stores (error naming the file when it is unreadable)."""
    from torch.distributed.checkpoint import FileSystemReader

    try:
        return set(FileSystemReader(str(ckpt_dir)).read_metadata().state_dict_metadata)
    except FileNotFoundError:
        raise CheckpointError(f"{Path(ckpt_dir) / '.metadata'} is missing: {ckpt_dir} is not "
                              "a complete distributed checkpoint") from None
    except Exception as exc:  # a truncated pickle raises any of several errors
        raise CheckpointError(f"{Path(ckpt_dir) / '.metadata'} is unreadable (truncated or "
                              f"corrupt: {type(exc).__name__}: {exc})") from exc


def drop_absent_extra_state(sharded: Any, stored: set[str], ckpt_dir: str | os.PathLike) -> Any:
    """Leave out ``_extra_state`` objects the checkpoint lacks (a Transformer Engine model
    reading a checkpoint written with the local spec keeps their defaults); any other absent
    model entry is an error naming it."""
    from megatron.core.dist_checkpointing.mapping import (
        ShardedObject,
        ShardedTensor,
        ShardedTensorFactory,
    )

    if isinstance(sharded, dict):
        out = {}
        for key, value in sharded.items():
            kept = drop_absent_extra_state(value, stored, ckpt_dir)
            if kept is not None:
                out[key] = kept
        return out
    if isinstance(sharded, list):
        return [v for v in (drop_absent_extra_state(x, stored, ckpt_dir) for x in sharded)
                if v is not None]
    if isinstance(sharded, ShardedObject):
        if sharded.unique_key in stored:
            return sharded
        if sharded.key.endswith(EXTRA_STATE):
            return None
        raise CheckpointError(f"object {sharded.unique_key!r} is missing from checkpoint "
                              f"{ckpt_dir}")
    if isinstance(sharded, ShardedTensor | ShardedTensorFactory) and sharded.key not in stored:
        raise CheckpointError(f"tensor {sharded.key!r} is missing from checkpoint {ckpt_dir}")
    return sharded


def check_global_shapes(sharded: Any, ckpt_dir: str | os.PathLike) -> None:
    """A friendlier message than Megatron's for a tensor whose stored shape differs."""
    from megatron.core.dist_checkpointing import load_tensors_metadata
    from megatron.core.dist_checkpointing.dict_utils import nested_values
    from megatron.core.dist_checkpointing.mapping import ShardedTensor

    stored = load_tensors_metadata(str(ckpt_dir))
    for value in nested_values(sharded):
        if isinstance(value, ShardedTensor) and value.key in stored:
            found = tuple(stored[value.key].global_shape)
            if found != tuple(value.global_shape):
                raise CheckpointError(f"tensor {value.key!r} in {ckpt_dir} has global shape "
                                      f"{found}; the model expects {tuple(value.global_shape)}")


def model_load_request(model_chunks: list, ckpt_dir: str | os.PathLike) -> dict[str, Any]:
    """The model part of a load: what the checkpoint holds of this model, shapes checked."""
    sharded = drop_absent_extra_state(model_sharded_state_dict(model_chunks),
                                      stored_keys(ckpt_dir), ckpt_dir)
    check_global_shapes(sharded, ckpt_dir)
    return sharded


def apply_model_state(model_chunks: list, loaded: dict[str, Any],
                      ckpt_dir: str | os.PathLike) -> None:
    """Copy the model part of a ``dist_checkpointing.load`` result into the chunks."""
    chunks = [unwrap(m) for m in model_chunks]
    states = [loaded["model"]] if len(chunks) == 1 else [loaded[f"model{i}"]
                                                           for i in range(len(chunks))]
    for chunk, state in zip(chunks, states):
        result = chunk.load_state_dict(state, strict=False)
        missing = [k for k in result.missing_keys if not k.endswith(EXTRA_STATE)]
        if missing or result.unexpected_keys:
            raise CheckpointError(f"checkpoint {ckpt_dir} does not fit the model: missing "
                                  f"{missing}, unexpected {list(result.unexpected_keys)}")


def load_model_weights(model_chunks: list, ckpt_dir: str | os.PathLike, *,
                       optimizer=None) -> None:
    """Load the weights (and, with ``optimizer``, its state) of a checkpoint into this job's
    model, without architecture checks (callers check for their purpose first)."""
    from megatron.core import dist_checkpointing

    ckpt_dir = str(Path(ckpt_dir).absolute())
    request = model_load_request(model_chunks, ckpt_dir)
    if optimizer is not None:
        from nemo_exaone.checkpoint.training_state import optimizer_load_request

        request["optimizer"] = optimizer_load_request(optimizer, request)
    loaded = dist_checkpointing.load(request, ckpt_dir)
    apply_model_state(model_chunks, loaded, ckpt_dir)
    if optimizer is not None:
        from nemo_exaone.checkpoint.training_state import apply_optimizer_state

        apply_optimizer_state(optimizer, loaded["optimizer"])


def load_mcore_checkpoint(
    model_chunks: list,
    ckpt_dir: str | os.PathLike,
    arch: ExaoneArch | None = None,
) -> CheckpointMetadata:
    """Load a checkpoint's weights into this job's model chunks (all ranks call it).

    Works for checkpoints from :func:`save_mcore_checkpoint`, ``convert hf-to-mcore`` and the
    training loop, at any TP/PP. Every architecture field must agree. A run directory or its
    ``checkpoints/`` folder means its latest intact checkpoint. Returns the metadata.
    """
    from nemo_exaone.checkpoint.locate import is_checkpoint_dir, locate_checkpoint

    if Path(ckpt_dir).is_dir() and not is_checkpoint_dir(Path(ckpt_dir)):
        ckpt_dir = locate_checkpoint(ckpt_dir).path
    metadata = check_checkpoint_matches(model_chunks, ckpt_dir, arch)
    load_model_weights(model_chunks, ckpt_dir)
    return metadata


def load_stage_weights(model_chunks: list, ckpt_dir: str | os.PathLike, arch: ExaoneArch,
                       optimizer=None) -> list[str]:
    """Start a new stage (or a teacher) from a checkpoint: the shapes must agree, RoPE and
    context length may change (returned as ``field: old -> new``). With ``optimizer``, its
    state is loaded too (``init.load=full``).

    Without ``optimizer``, call it before the optimizer is built (mixed-precision optimizers
    copy their fp32 main weights from the model when they are created)."""
    changes = check_arch_compatible(read_checkpoint_arch(ckpt_dir), arch, ckpt_dir,
                                    purpose="init")
    load_model_weights(model_chunks, ckpt_dir, optimizer=optimizer)
    return changes
