"""Save and load Megatron-Core distributed checkpoints of EXAONE models from training code.

Both run on every rank of a job with the model built for that job's TP/PP (VPP chunks
included); ``dist_checkpointing`` reshards, so a checkpoint saved (or converted) in one
layout loads in any other. Saving goes through the atomic ``.NAME.partial`` directory and
adds ``nemo_exaone.json`` (the architecture), which loading checks against the model.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from nemo_exaone.checkpoint.atomic_dir import (
    check_target,
    partial_path,
    prepare_partial,
    publish,
)
from nemo_exaone.checkpoint.dtypes import hf_dtype_name
from nemo_exaone.checkpoint.errors import CheckpointError
from nemo_exaone.checkpoint.metadata import (
    CheckpointMetadata,
    arch_differences,
    read_metadata,
    write_metadata,
)
from nemo_exaone.config.presets import ExaoneArch

EXTRA_STATE = "_extra_state"


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    while hasattr(model, "module"):
        model = model.module
    return model


def model_sharded_state_dict(model_chunks: list) -> dict[str, Any]:
    """One sharded state dict for all chunks (``model0``, ``model1``... with virtual stages)."""
    chunks = [_unwrap(m) for m in model_chunks]
    if len(chunks) == 1:
        return chunks[0].sharded_state_dict()
    return {f"model{i}": chunk.sharded_state_dict() for i, chunk in enumerate(chunks)}


def _rank() -> int:
    return torch.distributed.get_rank() if torch.distributed.is_initialized() else 0


def _barrier() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.barrier()


def save_mcore_checkpoint(
    model_chunks: list,
    ckpt_dir: str | os.PathLike,
    arch: ExaoneArch,
    *,
    hf_source_dir: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Save this job's model (all ranks call it) as a distributed checkpoint at ``ckpt_dir``."""
    from megatron.core import dist_checkpointing

    from nemo_exaone.runtime.versions import megatron_core_version

    target = Path(ckpt_dir).absolute()
    check_target(target, overwrite)  # every rank, so that all of them stop together
    if _rank() == 0:
        target.parent.mkdir(parents=True, exist_ok=True)
        prepare_partial(target)
    _barrier()
    tmp = partial_path(target)
    dist_checkpointing.save(model_sharded_state_dict(model_chunks), str(tmp))
    if _rank() == 0:
        dtype = next(_unwrap(model_chunks[0]).parameters()).dtype
        write_metadata(tmp, CheckpointMetadata(
            hf_config=arch.to_hf_config(), dtype=hf_dtype_name(dtype),
            hf_source_dir=hf_source_dir, writer="save_mcore_checkpoint",
            megatron_core=megatron_core_version()))
        publish(tmp, target)
    _barrier()
    return target


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
    diffs = arch_differences(arch, found) if arch is not None else []
    diffs += _model_arch_differences(_unwrap(model_chunks[0]), found)
    if diffs:
        raise CheckpointError(f"checkpoint {ckpt_dir} was written for another architecture: "
                              + "; ".join(dict.fromkeys(diffs)))
    return metadata


def _drop_absent_extra_state(sharded: Any, stored: set[str], ckpt_dir: str) -> Any:
    """Leave out ``_extra_state`` objects the checkpoint lacks (e.g. a TE model loading a
    checkpoint written with the local spec: they keep their defaults); any other absent
    entry is an error naming it."""
    from megatron.core.dist_checkpointing.mapping import (
        ShardedObject,
        ShardedTensor,
        ShardedTensorFactory,
    )

    if isinstance(sharded, dict):
        out = {}
        for key, value in sharded.items():
            kept = _drop_absent_extra_state(value, stored, ckpt_dir)
            if kept is not None:
                out[key] = kept
        return out
    if isinstance(sharded, list):
        return [v for v in (_drop_absent_extra_state(x, stored, ckpt_dir) for x in sharded)
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


def load_mcore_checkpoint(
    model_chunks: list,
    ckpt_dir: str | os.PathLike,
    arch: ExaoneArch | None = None,
) -> CheckpointMetadata:
    """Load a distributed checkpoint into this job's model chunks (all ranks call it).

    Works for checkpoints from :func:`save_mcore_checkpoint` and from ``convert
    hf-to-mcore``, at any TP/PP. Returns the checkpoint's metadata.
    """
    from megatron.core import dist_checkpointing
    from torch.distributed.checkpoint import FileSystemReader

    ckpt_dir = str(Path(ckpt_dir).absolute())
    metadata = check_checkpoint_matches(model_chunks, ckpt_dir, arch)
    stored = set(FileSystemReader(ckpt_dir).read_metadata().state_dict_metadata)
    sharded = _drop_absent_extra_state(model_sharded_state_dict(model_chunks), stored, ckpt_dir)
    _check_global_shapes(sharded, ckpt_dir)
    state = dist_checkpointing.load(sharded, ckpt_dir)
    # dist_checkpointing merges the checkpoint's common (non-sharded) state into the result:
    # a training checkpoint brings optimizer/scheduler/train_state there. Weights only here.
    state = {key: value for key, value in state.items() if key in sharded}
    chunks = [_unwrap(m) for m in model_chunks]
    states = [state] if len(chunks) == 1 else [state[f"model{i}"] for i in range(len(chunks))]
    for chunk, chunk_state in zip(chunks, states):
        result = chunk.load_state_dict(chunk_state, strict=False)
        missing = [k for k in result.missing_keys if not k.endswith(EXTRA_STATE)]
        if missing or result.unexpected_keys:
            raise CheckpointError(f"loading {ckpt_dir}: missing {missing}, unexpected "
                                  f"{list(result.unexpected_keys)}")
    return metadata


def _check_global_shapes(sharded: Any, ckpt_dir: str) -> None:
    """A friendlier message than Megatron's for a tensor whose stored shape differs."""
    from megatron.core.dist_checkpointing import load_tensors_metadata
    from megatron.core.dist_checkpointing.dict_utils import nested_values
    from megatron.core.dist_checkpointing.mapping import ShardedTensor

    stored = load_tensors_metadata(ckpt_dir)
    for value in nested_values(sharded):
        if isinstance(value, ShardedTensor) and value.key in stored:
            found = tuple(stored[value.key].global_shape)
            if found != tuple(value.global_shape):
                raise CheckpointError(f"tensor {value.key!r} in {ckpt_dir} has global shape "
                                      f"{found}; the model expects {tuple(value.global_shape)}")
