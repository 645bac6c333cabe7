"""What Megatron-Core stores for an EXAONE model, asked of Megatron itself.

The converter builds the model once at TP=1/PP=1 on the meta device (no memory) and reads its
``sharded_state_dict()``: every stored key, its global (TP/PP-agnostic) shape, the chunk each
parameter becomes (layers stacked on a leading axis, gated fc1 as two halves), and the
small per-module objects (``_extra_state``). Writing exactly that means the checkpoint is
what Megatron would have written itself at TP=1, and loads at any TP/PP through
``dist_checkpointing``. Nothing about Megatron's key naming is hard-coded here.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from nemo_exaone.checkpoint.mapping import WeightTable
from nemo_exaone.config.presets import ExaoneArch

_DIST_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class LayoutChunk:
    """Part of Megatron parameter ``param`` stored as ``key``[offset : offset + shape]."""

    param: str  # full-model parameter name, table spelling
    key: str
    global_shape: tuple[int, ...]
    offset: tuple[int, ...]
    shape: tuple[int, ...]  # with the leading singleton (stacked-layer) axes
    param_offset: tuple[int, ...]  # where the chunk sits inside the full parameter
    param_shape: tuple[int, ...]


@dataclass
class MegatronLayout:
    chunks: list[LayoutChunk]
    objects: dict[str, Any]  # unique key -> object, e.g. '..._extra_state/shard_0_4' -> None
    sharded_backend: tuple[str, int]
    common: dict[str, Any] = field(default_factory=dict)

    def params(self) -> dict[str, list[LayoutChunk]]:
        out: dict[str, list[LayoutChunk]] = {}
        for chunk in self.chunks:
            out.setdefault(chunk.param, []).append(chunk)
        return out


@contextlib.contextmanager
def single_process_megatron() -> Iterator[None]:
    """Megatron parallel state for one process (TP=PP=1), torn down afterwards.

    Inside a job that already has process groups, only a world of one is accepted: the
    converter is a single-process tool and its output loads at any TP/PP.
    """
    import torch.distributed as dist

    from nemo_exaone.config.parallel import ParallelConfig
    from nemo_exaone.runtime.distributed import destroy_distributed, free_port, init_distributed

    if dist.is_available() and dist.is_initialized():
        from megatron.core import parallel_state as ps

        if dist.get_world_size() != 1 or (
                ps.model_parallel_is_initialized()
                and (ps.get_tensor_model_parallel_world_size(),
                     ps.get_pipeline_model_parallel_world_size()) != (1, 1)):
            raise ValueError("checkpoint conversion runs in a single process; run it with "
                             "plain python / the nemo-exaone CLI, not under torchrun "
                             "(its output loads at any TP/PP)")
        if not ps.model_parallel_is_initialized():
            ps.initialize_model_parallel()
        yield
        return
    saved = {k: os.environ.get(k) for k in _DIST_ENV}
    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(free_port()))
    try:
        init_distributed(ParallelConfig())
        yield
    finally:
        destroy_distributed()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def megatron_layout(arch: ExaoneArch, table: WeightTable) -> MegatronLayout:
    """The distributed-checkpoint layout of ``arch`` (local layer spec, fp32, meta device)."""
    from megatron.core.dist_checkpointing.mapping import (
        ShardedObject,
        ShardedTensor,
        ShardedTensorFactory,
    )
    from megatron.core.dist_checkpointing.serialization import get_default_save_sharded_strategy

    from nemo_exaone.model.builder import ModelOptions, build_model

    with single_process_megatron():
        # CPU-style initialisation: on a GPU machine Megatron would otherwise allocate every
        # parameter on the GPU (an explicit device wins over the meta-device context).
        options = ModelOptions(spec="local", extra_config={"use_cpu_initialization": True})
        model = build_model(arch, options=options, meta_device=True)
        sharded = model.sharded_state_dict()
        strategy = get_default_save_sharded_strategy()
        backend = (strategy.backend, strategy.version)

    chunks, objects, common = [], {}, {}
    for name, value in sharded.items():
        param = table.canonical_megatron_name(name)
        if isinstance(value, ShardedTensorFactory):
            value = value.build()
        if isinstance(value, ShardedObject):
            objects[value.unique_key] = value.data
            continue
        tensors = value if isinstance(value, list) else [value]
        if not all(isinstance(t, ShardedTensor) for t in tensors):
            common[name] = value
            continue
        for st in tensors:
            if st.flattened_range is not None:
                raise RuntimeError(f"{st.key}: flattened shards are not expected in a model "
                                   "state dict")
            prepend = st.prepend_axis_num
            chunks.append(LayoutChunk(
                param=param, key=st.key, global_shape=tuple(st.global_shape),
                offset=tuple(st.global_offset), shape=(1,) * prepend + tuple(st.local_shape),
                param_offset=tuple(st.global_offset[prepend:]),
                param_shape=tuple(st.global_shape[prepend:])))
    return MegatronLayout(chunks=chunks, objects=objects, sharded_backend=backend,
                          common=common)


def check_layout_covers(layout: MegatronLayout, megatron_names: list[str]) -> None:
    """The table and Megatron must agree on the set of parameters (guards version drift)."""
    stored = set(layout.params())
    wanted = set(megatron_names)
    if stored != wanted:
        raise RuntimeError(
            "the weight table and Megatron-Core's model disagree: "
            f"only in Megatron {sorted(stored - wanted)}, only in the table "
            f"{sorted(wanted - stored)}")
