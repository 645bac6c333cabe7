"""HF EXAONE checkpoint -> Megatron-Core distributed checkpoint (torch_dist), streaming.

One process, no model weights in memory: each Megatron parameter is built from its HF
tensors when the DCP writer asks for it, written, and dropped. The result carries global
(TP/PP-agnostic) shapes, so any TP/PP layout loads it through ``dist_checkpointing``
(see :func:`nemo_exaone.checkpoint.mcore_checkpoint.load_mcore_checkpoint`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from pathlib import Path

import torch

from nemo_exaone.checkpoint.dcp_io import ChunkSpec, write_dcp
from nemo_exaone.checkpoint.dtypes import hf_dtype_name, parse_dtype
from nemo_exaone.checkpoint.errors import CheckpointError, nonfinite_error
from nemo_exaone.checkpoint.exaone4_hf import hf_table
from nemo_exaone.checkpoint.exaone_hf import (
    IDENTITY_DIR,
    copy_identity,
    identity_files,
)
from nemo_exaone.checkpoint.hf_source import HFSource, describe_hf_config, read_hf_arch
from nemo_exaone.checkpoint.mapping import WeightTable
from nemo_exaone.checkpoint.mcore_layout import (
    LayoutChunk,
    MegatronLayout,
    check_layout_covers,
    megatron_layout,
)
from nemo_exaone.checkpoint.metadata import CheckpointMetadata, write_metadata
from nemo_exaone.checkpoint.progress import byte_progress
from nemo_exaone.checkpoint.report import ConversionReport
from nemo_exaone.checkpoint.verify import verify_dist_checkpoint
from nemo_exaone.config.parallel import ParallelConfig, validate_parallel
from nemo_exaone.runtime.outputs import atomic_directory, check_output, refuse_overlap


def chunk_of(full: torch.Tensor, chunk: LayoutChunk) -> torch.Tensor:
    """The part of a full parameter stored as ``chunk`` (a view, stacked-layer axes added)."""
    region = full
    inner = chunk.shape[len(chunk.shape) - len(chunk.param_shape):]
    for dim, (start, size) in enumerate(zip(chunk.param_offset, inner)):
        region = region.narrow(dim, start, size)
    return region.reshape(chunk.shape)


def split_rows(chunk: LayoutChunk, itemsize: int, max_bytes: int) -> list[LayoutChunk]:
    """Cut a large chunk into row blocks of at most ``max_bytes``.

    DCP reads a stored chunk whole before narrowing it, so smaller chunks bound the memory of
    every later reader: the exporter, and each training rank that needs only its TP slice of
    the embedding.
    """
    prepend = len(chunk.shape) - len(chunk.param_shape)
    rows = chunk.shape[prepend]
    row_bytes = itemsize * math.prod(chunk.shape[prepend + 1:])
    step = max(1, max_bytes // max(row_bytes, 1))
    if rows <= step:
        return [chunk]
    out = []
    for start in range(0, rows, step):
        size = min(step, rows - start)
        offset, shape, param_offset = list(chunk.offset), list(chunk.shape), list(chunk.param_offset)
        offset[prepend] += start
        shape[prepend] = size
        param_offset[0] += start
        out.append(dataclasses.replace(chunk, offset=tuple(offset), shape=tuple(shape),
                                       param_offset=tuple(param_offset)))
    return out


def write_megatron_files(directory: Path, layout: MegatronLayout) -> None:
    """metadata.json and common.pt, as ``dist_checkpointing.save`` writes them."""
    from megatron.core.dist_checkpointing.core import CheckpointingConfig, save_config

    save_config(CheckpointingConfig(*layout.sharded_backend), str(directory))
    torch.save(layout.common, directory / "common.pt")


def convert_hf_to_mcore(
    hf_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    preset: str | None = None,
    tensor_parallel: int = 1,
    pipeline_parallel: int = 1,
    dtype: str = "keep",
    overwrite: bool = False,
    progress: bool | None = None,
    table: WeightTable | None = None,
    max_chunk_bytes: int = 256 * 2**20,
) -> ConversionReport:
    """Convert an HF EXAONE 3.x checkpoint into a Megatron distributed checkpoint.

    ``tensor_parallel``/``pipeline_parallel`` only validate the layout you intend to train
    with (the checkpoint itself is layout-agnostic) and are recorded as a hint.
    """
    start = time.perf_counter()
    hf_dir, out_dir = Path(hf_dir), Path(out_dir).absolute()
    refuse_overlap(out_dir, [hf_dir], output_flag="--out", input_flags=["--hf"])
    arch = read_hf_arch(hf_dir, preset)
    validate_parallel(arch, ParallelConfig(tensor_model_parallel_size=tensor_parallel,
                                           pipeline_model_parallel_size=pipeline_parallel),
                      world_size=tensor_parallel * pipeline_parallel)
    cast = parse_dtype(dtype)
    check_output(out_dir, overwrite, flag="--out")
    table = table or hf_table(arch)  # the layout of arch's family (model_type)
    source = HFSource(hf_dir, arch, table)
    layout = megatron_layout(arch, table)
    bound = {b.megatron: b for b in source.bound}
    check_layout_covers(layout, list(bound))

    # Table order (layer by layer), so each parameter is built once and then dropped.
    order = {name: k for k, name in enumerate(bound)}
    param_dtype = {name: cast or source.weights.tensors[b.targets[0]].dtype
                   for name, b in bound.items()}
    chunks = [piece for c in sorted(layout.chunks, key=lambda c: order[c.param])
              for piece in split_rows(c, param_dtype[c.param].itemsize, max_chunk_bytes)]
    by_id = {(c.key, c.offset): c for c in chunks}
    specs = [ChunkSpec(c.key, c.global_shape, c.offset, c.shape, param_dtype[c.param])
             for c in chunks]
    total = source.weights.total_bytes()
    current: dict[str, object] = {"param": None, "tensor": None}
    bar = byte_progress(total, "hf-to-mcore", progress)

    def produce(spec: ChunkSpec) -> torch.Tensor:
        chunk = by_id[(spec.key, spec.offset)]
        if current["param"] != chunk.param:
            current["tensor"] = None  # drop the previous parameter first
            mapping = bound[chunk.param]
            tensor = source.megatron_tensor(mapping)
            if not bool(torch.isfinite(tensor).all()):
                current["error"] = nonfinite_error(source, mapping)
                raise current["error"]
            if cast is not None:
                tensor = tensor.to(cast)
                if not bool(torch.isfinite(tensor).all()):
                    current["error"] = CheckpointError(
                        f"tensor(s) {', '.join(mapping.targets)} overflow to Inf when cast to "
                        f"{hf_dtype_name(cast)} (--dtype); keep the source dtype (--dtype keep)")
                    raise current["error"]
            current.update(param=chunk.param, tensor=tensor)
            bar.update(source.source_bytes(mapping))
        return chunk_of(current["tensor"], chunk)

    from nemo_exaone.runtime.versions import megatron_core_version

    written_dtypes = sorted({hf_dtype_name(d) for d in param_dtype.values()})
    try:
        # One writer per output (a second run is refused, naming the holder); published only
        # once every shard the DCP metadata lists is on disk.
        with atomic_directory(out_dir, overwrite=overwrite, inputs=[hf_dir],
                              input_flags=["--hf"], flag="--out",
                              verify=verify_dist_checkpoint) as tmp:
            try:
                write_dcp(tmp, specs, layout.objects, produce)
            except BaseException:  # DCP's CheckpointException derives from BaseException
                if isinstance(current.get("error"), CheckpointError):
                    raise current["error"] from None  # DCP wraps it; the cause is ours
                raise
            current["tensor"] = None
            write_megatron_files(tmp, layout)
            # The source's identity (config.json verbatim, generation config, tokenizer, remote
            # code) travels with the checkpoint, so export needs nothing else.
            identity = identity_files(hf_dir)
            copy_identity(hf_dir, tmp / IDENTITY_DIR, identity)
            write_metadata(tmp, CheckpointMetadata(
                hf_config=arch.to_hf_config(), dtype=",".join(written_dtypes),
                hf_source_dir=str(hf_dir.absolute()), writer="hf-to-mcore",
                megatron_core=megatron_core_version(),
                extra={"intended_parallel": {"tensor_model_parallel_size": tensor_parallel,
                                             "pipeline_model_parallel_size": pipeline_parallel},
                       "hf_identity": {"dir": IDENTITY_DIR, "files": identity}}))
            written = sum(p.stat().st_size for p in tmp.iterdir() if p.is_file())
    finally:
        bar.close()
    details = describe_hf_config(hf_dir, arch)
    details.append("recorded from the source: " + (", ".join(identity) or "nothing"))
    return ConversionReport("hf-to-mcore", str(hf_dir), str(out_dir),
                            len(source.weights.tensors), total,
                            written, time.perf_counter() - start, details)
