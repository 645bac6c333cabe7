"""Megatron-Core distributed checkpoint -> HF EXAONE checkpoint, streaming.

Reads each Megatron parameter's region from the DCP files (whatever TP/PP layout saved
them), splits it back into HF tensors with the same table the import used, and appends them
to safetensors shards whose headers were planned up front. Writes ``config.json`` from the
checkpoint's recorded architecture and copies tokenizer files when it can find them.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import torch

from nemo_exaone.checkpoint.dcp_io import DistCheckpointReader
from nemo_exaone.checkpoint.dtypes import hf_dtype_name, parse_dtype
from nemo_exaone.checkpoint.errors import CheckpointError
from nemo_exaone.checkpoint.exaone_hf import EXAONE_HF_TABLE, TOKENIZER_FILES, exaone_dims
from nemo_exaone.checkpoint.mapping import WeightTable
from nemo_exaone.checkpoint.mcore_layout import LayoutChunk, check_layout_covers, megatron_layout
from nemo_exaone.checkpoint.metadata import read_metadata
from nemo_exaone.checkpoint.progress import byte_progress
from nemo_exaone.checkpoint.report import ConversionReport
from nemo_exaone.checkpoint.safetensors_io import ShardedSafetensorsWriter, TensorEntry, parse_size
from nemo_exaone.checkpoint.verify import verify_hf_checkpoint
from nemo_exaone.config.presets import ExaoneArch
from nemo_exaone.runtime.outputs import atomic_directory, check_output, refuse_overlap


def read_param(reader: DistCheckpointReader, chunks: list[LayoutChunk]) -> torch.Tensor:
    """One full Megatron parameter, assembled from its layout chunks."""
    first = chunks[0]
    dtype = reader.tensor_metadata(first.key).properties.dtype
    full = torch.empty(first.param_shape, dtype=dtype)
    for chunk in chunks:
        inner = chunk.shape[len(chunk.shape) - len(chunk.param_shape):]
        view = full
        for dim, (start, size) in enumerate(zip(chunk.param_offset, inner)):
            view = view.narrow(dim, start, size)
        reader.read(chunk.key, chunk.offset, chunk.shape, out=view.view(chunk.shape))
    return full


def _check_stored(reader: DistCheckpointReader, chunks: list[LayoutChunk], arch: ExaoneArch,
                  ckpt_dir: Path) -> None:
    for chunk in chunks:
        md = reader.metadata.state_dict_metadata.get(chunk.key)
        if md is None:
            raise CheckpointError(f"tensor {chunk.key!r} is missing from checkpoint {ckpt_dir}")
        if tuple(md.size) != chunk.global_shape:
            raise CheckpointError(
                f"tensor {chunk.key!r} in {ckpt_dir} has global shape {tuple(md.size)}, but the "
                f"recorded architecture (num_layers={arch.num_layers}, hidden_size="
                f"{arch.hidden_size}, ...) implies {chunk.global_shape}")


def find_tokenizer_dir(explicit: str | os.PathLike | None, recorded: str | None) -> Path | None:
    """The tokenizer files to copy: ``explicit`` (``--tokenizer``), which must exist, else
    the recorded HF source directory if it still exists, else none."""
    if explicit is not None:
        if not Path(explicit).is_dir():
            raise FileNotFoundError(f"--tokenizer {explicit}: no such directory")
        return Path(explicit)
    if recorded and Path(recorded).is_dir():
        return Path(recorded)
    return None


def convert_mcore_to_hf(
    ckpt_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    tokenizer_dir: str | os.PathLike | None = None,
    hf_config: str | os.PathLike | None = None,
    max_shard_size: str | int = "5GB",
    dtype: str = "keep",
    overwrite: bool = False,
    progress: bool | None = None,
    table: WeightTable = EXAONE_HF_TABLE,
) -> ConversionReport:
    """Export a Megatron checkpoint (from ``hf-to-mcore`` or training) as an HF checkpoint.

    ``hf_config``: a config.json to use instead of the checkpoint's recorded architecture
    (for checkpoints written by other tools, without ``nemo_exaone.json``).
    """
    start = time.perf_counter()
    ckpt_dir, out_dir = Path(ckpt_dir).absolute(), Path(out_dir).absolute()
    inputs, input_flags = [ckpt_dir, hf_config], ["--ckpt", "--hf-config"]
    refuse_overlap(out_dir, inputs, output_flag="--out", input_flags=input_flags)
    if hf_config is not None:
        arch, source_dir = ExaoneArch.from_hf_config(json.loads(Path(hf_config).read_text())), None
    else:
        metadata = read_metadata(ckpt_dir)
        arch, source_dir = metadata.arch(), metadata.hf_source_dir
    cast = parse_dtype(dtype)
    shard_bytes = parse_size(max_shard_size) if isinstance(max_shard_size, str) else max_shard_size
    tokenizer = find_tokenizer_dir(tokenizer_dir, source_dir)
    # The tokenizer is read (copied) too: by default from the recorded HF source directory.
    inputs.append(tokenizer)
    input_flags.append("--tokenizer" if tokenizer_dir is not None else
                       "the tokenizer directory (the checkpoint's recorded HF source)")
    refuse_overlap(out_dir, inputs, output_flag="--out", input_flags=input_flags)
    check_output(out_dir, overwrite, flag="--out")
    reader = DistCheckpointReader(ckpt_dir)
    dims = exaone_dims(arch)
    bound = table.bind(dims)
    layout = megatron_layout(arch, table)
    check_layout_covers(layout, [b.megatron for b in bound])
    params = layout.params()
    _check_stored(reader, layout.chunks, arch, ckpt_dir)

    def stored_dtype(megatron: str) -> torch.dtype:
        return cast or reader.tensor_metadata(params[megatron][0].key).properties.dtype

    entries = [TensorEntry(name, stored_dtype(b.megatron), shape)
               for b in bound for name, shape in zip(b.targets, b.target_shapes)]
    total = sum(e.nbytes for e in entries)
    bar = byte_progress(total, "mcore-to-hf", progress)
    try:
        with atomic_directory(out_dir, overwrite=overwrite, inputs=inputs,
                              input_flags=input_flags, flag="--out",
                              verify=verify_hf_checkpoint) as tmp:
            writer = ShardedSafetensorsWriter(tmp, entries, shard_bytes)
            for mapping in bound:
                full = read_param(reader, params[mapping.megatron])
                for name, tensor in zip(mapping.targets, mapping.from_megatron(full, dims)):
                    tensor = tensor if cast is None else tensor.to(cast)
                    writer.write(name, tensor)
                    bar.update(tensor.numel() * tensor.element_size())
                del full
            writer.close()
            config = arch.to_hf_config()
            if cast is not None:
                config["torch_dtype"] = hf_dtype_name(cast)
            (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
            if tokenizer is not None:
                for name in TOKENIZER_FILES:
                    if (tokenizer / name).is_file():
                        shutil.copy2(tokenizer / name, tmp / name)
    finally:
        bar.close()
    return ConversionReport("mcore-to-hf", str(ckpt_dir), str(out_dir), len(entries), total,
                            total, time.perf_counter() - start)
