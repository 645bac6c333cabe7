"""Load HF EXAONE weights straight into a live (TP/PP-sharded) model, one tensor at a time.

For jobs that start from HF weights without a conversion step. Every rank reads only the
tensors its chunks hold and keeps one full parameter in memory at a time; the checkpoint is
validated (headers only) before any parameter changes.
"""

from __future__ import annotations

import os

import torch

from nemo_exaone.checkpoint.errors import CheckpointError, nonfinite_error
from nemo_exaone.checkpoint.exaone4_hf import hf_table
from nemo_exaone.checkpoint.hf_source import HFSource, read_hf_arch
from nemo_exaone.checkpoint.mapping import WeightTable
from nemo_exaone.checkpoint.metadata import check_same_arch
from nemo_exaone.config.presets import ExaoneArch


@torch.no_grad()
def load_hf_weights(
    model_chunks: list,
    hf_dir: str | os.PathLike,
    arch: ExaoneArch | None = None,
    table: WeightTable | None = None,
) -> None:
    """Copy an HF checkpoint into this rank's model chunks (every rank calls it).

    ``arch``: the architecture the model was built for; the checkpoint's config.json must
    agree (default: trust config.json).
    """
    from megatron.core import parallel_state

    from nemo_exaone.model.sharding import global_param_names, shard_tensor, unwrap

    found = read_hf_arch(hf_dir)
    if arch is not None:
        check_same_arch(arch, found, f"{hf_dir}/config.json")
    table = table or hf_table(found)  # the layout of the checkpoint's family
    source = HFSource(hf_dir, found, table)
    by_megatron = {b.megatron: b for b in source.bound}
    tied = table.tied_megatron_names()
    tp_rank = parallel_state.get_tensor_model_parallel_rank()
    tp_size = parallel_state.get_tensor_model_parallel_world_size()
    for chunk in model_chunks:
        names = global_param_names(chunk)
        for local_name, param in unwrap(chunk).named_parameters():
            name = table.canonical_megatron_name(names[local_name])
            if name not in by_megatron and found.tie_word_embeddings:
                name = tied.get(name, name)
            if name not in by_megatron:
                raise CheckpointError(f"model parameter {name!r} has no mapping in table "
                                      f"{table.name!r}")
            full = source.megatron_tensor(by_megatron[name])
            if not bool(torch.isfinite(full).all()):
                raise nonfinite_error(source, by_megatron[name])
            piece = shard_tensor(local_name, full, param, tp_rank, tp_size)
            if piece.shape != param.shape:
                raise CheckpointError(f"{name}: shard shape {tuple(piece.shape)} does not match "
                                      f"the model's {tuple(param.shape)}")
            param.copy_(piece)
