"""Place full (unsharded, TP=1/PP=1) Megatron tensors into this rank's model, and back.

Megatron marks each tensor-parallel parameter with ``partition_dim``; the one layout that
is not a plain contiguous split is the gated MLP's ``linear_fc1``, which holds [gate; up]
per rank, so rank r owns [gate_r; up_r]. Pipeline stages name layers locally; their global
index is ``layer_number - 1``.
"""

from __future__ import annotations

import re

import torch

_LAYER_RE = re.compile(r"^(decoder\.layers\.)(\d+)(\..*)$")


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The Megatron module inside DDP / Float16Module wrappers (every caller uses this one)."""
    while hasattr(model, "module"):
        model = model.module
    return model


def global_param_names(model: torch.nn.Module) -> dict[str, str]:
    """Local parameter name -> name in the full model (layer index made global)."""
    inner = unwrap(model)
    offsets = {}
    if hasattr(inner, "decoder"):
        for local_i, layer in enumerate(inner.decoder.layers):
            offsets[local_i] = layer.layer_number - 1
    out = {}
    for name, _ in inner.named_parameters():
        match = _LAYER_RE.match(name)
        if match:
            name_global = f"{match[1]}{offsets[int(match[2])]}{match[3]}"
        else:
            name_global = name
        out[name] = name_global
    return out


def is_gated_fc1(name: str) -> bool:
    return name.endswith("mlp.linear_fc1.weight")


def shard_tensor(name: str, full: torch.Tensor, param: torch.Tensor, tp_rank: int,
                 tp_size: int) -> torch.Tensor:
    """The slice of ``full`` that rank ``tp_rank`` holds for parameter ``param``."""
    if tp_size == 1 or not getattr(param, "tensor_model_parallel", False):
        return full
    dim = param.partition_dim
    if is_gated_fc1(name):
        gate, up = full.chunk(2, dim=0)
        return torch.cat([gate.chunk(tp_size, dim=0)[tp_rank], up.chunk(tp_size, dim=0)[tp_rank]])
    return full.chunk(tp_size, dim=dim)[tp_rank]


def unshard_tensors(name: str, shards: list[torch.Tensor], param: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`shard_tensor`: concatenate the per-rank shards (in rank order)."""
    if len(shards) == 1 or not getattr(param, "tensor_model_parallel", False):
        return shards[0]
    if is_gated_fc1(name):
        gates, ups = zip(*(s.chunk(2, dim=0) for s in shards))
        return torch.cat([torch.cat(gates), torch.cat(ups)])
    return torch.cat(shards, dim=param.partition_dim)


@torch.no_grad()
def load_full_state_dict(model: torch.nn.Module, full: dict[str, torch.Tensor]) -> None:
    """Copy full-model tensors into this rank's (TP/PP-sharded) model chunk.

    Every parameter of the chunk must be present in ``full`` with the full shape; the error
    names the tensor otherwise.
    """
    from megatron.core import parallel_state

    tp_rank = parallel_state.get_tensor_model_parallel_rank()
    tp_size = parallel_state.get_tensor_model_parallel_world_size()
    names = global_param_names(model)
    for local_name, param in unwrap(model).named_parameters():
        global_name = names[local_name]
        if global_name not in full:
            # Tied output layer on the last stage takes the embedding.
            if global_name == "output_layer.weight" and "embedding.word_embeddings.weight" in full:
                global_name = "embedding.word_embeddings.weight"
            else:
                raise KeyError(f"tensor {global_name!r} is missing from the state dict")
        piece = shard_tensor(local_name, full[global_name], param, tp_rank, tp_size)
        if piece.shape != param.shape:
            raise ValueError(f"tensor {global_name!r}: shard shape {tuple(piece.shape)} does "
                             f"not match the model's {tuple(param.shape)}")
        param.copy_(piece.to(param.dtype))
