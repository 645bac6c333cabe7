"""Megatron-Core distributed checkpoint -> HF EXAONE checkpoint, streaming.

Reads each Megatron parameter's region from the DCP files (whatever TP/PP layout saved
them), splits it back into HF tensors with the same table the import used, and appends them
to safetensors shards whose headers were planned up front. Writes ``config.json`` from the
checkpoint's recorded architecture and copies tokenizer files when it can find them.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

from nemo_exaone.checkpoint.dcp_io import DistCheckpointReader
from nemo_exaone.checkpoint.dtypes import hf_dtype_name, parse_dtype
from nemo_exaone.checkpoint.errors import CheckpointError
from nemo_exaone.checkpoint.exaone4_hf import hf_table
from nemo_exaone.checkpoint.exaone_hf import (
    config_changes,
    copy_identity,
    exaone_dims,
    export_hf_config,
    identity_files,
    tokenizer_files,
)
from nemo_exaone.checkpoint.mapping import WeightTable
from nemo_exaone.checkpoint.mcore_layout import LayoutChunk, check_layout_covers, megatron_layout
from nemo_exaone.checkpoint.metadata import read_metadata
from nemo_exaone.checkpoint.progress import byte_progress
from nemo_exaone.checkpoint.report import ConversionReport
from nemo_exaone.checkpoint.safetensors_io import ShardedSafetensorsWriter, TensorEntry, parse_size
from nemo_exaone.checkpoint.verify import verify_hf_checkpoint
from nemo_exaone.config.hf_config import describe_rope
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


def check_stored_shapes(reader: DistCheckpointReader, chunks: list[LayoutChunk],
                        arch: ExaoneArch, ckpt_dir: Path) -> None:
    """Refuse, naming the tensor, a checkpoint whose stored tensors lack or misshape what the
    architecture's layout needs (every exporter checks this before writing anything)."""
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
    table: WeightTable | None = None,
) -> ConversionReport:
    """Export a Megatron checkpoint (from ``hf-to-mcore`` or training) as an HF checkpoint.

    ``hf_config``: a config.json to use instead of the checkpoint's recorded architecture
    (for checkpoints written by other tools, without ``nemo_exaone.json``).
    """
    start = time.perf_counter()
    ckpt_dir, out_dir = Path(ckpt_dir).absolute(), Path(out_dir).absolute()
    inputs, input_flags = [ckpt_dir, hf_config], ["--ckpt", "--hf-config"]
    refuse_overlap(out_dir, inputs, output_flag="--out", input_flags=input_flags)
    identity_dir, identity = None, []
    if hf_config is not None:
        arch, source_dir = ExaoneArch.from_hf_config(
            json.loads(Path(hf_config).read_text()), path=str(hf_config)), None
    else:
        metadata = read_metadata(ckpt_dir)
        arch, source_dir = metadata.arch(), metadata.hf_source_dir
        recorded = (metadata.extra or {}).get("hf_identity")
        if recorded:  # recorded at import: the checkpoint carries what export writes back
            identity_dir, identity = ckpt_dir / recorded["dir"], list(recorded["files"])
            source_dir = None
    cast = parse_dtype(dtype)
    shard_bytes = parse_size(max_shard_size) if isinstance(max_shard_size, str) else max_shard_size
    tokenizer = find_tokenizer_dir(tokenizer_dir, source_dir)
    carried = plan_identity_files(identity_dir, identity, tokenizer,
                             legacy_source=source_dir if tokenizer_dir is None else None)
    # The tokenizer is read (copied) too: by default from the recorded HF source directory.
    inputs.append(tokenizer)
    input_flags.append("--tokenizer" if tokenizer_dir is not None else
                       "the tokenizer directory (the checkpoint's recorded HF source)")
    refuse_overlap(out_dir, inputs, output_flag="--out", input_flags=input_flags)
    check_output(out_dir, overwrite, flag="--out")
    reader = DistCheckpointReader(ckpt_dir)
    dims = exaone_dims(arch)
    table = table or hf_table(arch)  # the layout of arch's family (model_type)
    bound = table.bind(dims)
    layout = megatron_layout(arch, table)
    check_layout_covers(layout, [b.megatron for b in bound])
    params = layout.params()
    check_stored_shapes(reader, layout.chunks, arch, ckpt_dir)

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
            for source, names in carried:
                copy_identity(source, tmp, names)
            present = {n for _, names in carried for n in names}
            config, details = export_hf_config(
                arch, present, None if cast is None else hf_dtype_name(cast))
            (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    finally:
        bar.close()
    details.insert(0, describe_rope(arch.rope_theta, arch.rope_scaling))
    if identity_dir is not None and (identity_dir / "config.json").is_file():
        source_config = json.loads((identity_dir / "config.json").read_text())
        changes = config_changes(source_config, config)
        details.append("config.json fields changed against the imported source: "
                       + ("; ".join(changes) if changes else "none"))
    details.append("carried: " + (", ".join(sorted(present)) or "nothing"))
    if not tokenizer_files(sorted(present)):
        details.append("no tokenizer files: AutoTokenizer cannot load this directory (pass "
                       "--tokenizer DIR)")
    return ConversionReport("mcore-to-hf", str(ckpt_dir), str(out_dir), len(entries), total,
                            total, time.perf_counter() - start, details)


def plan_identity_files(identity_dir: Path | None, identity: list[str],
                        tokenizer: Path | None, legacy_source: str | None
                        ) -> list[tuple[Path, list[str]]]:
    """(directory, relative names) to copy into the export, config.json excluded (written from
    the architecture). ``--tokenizer`` replaces the recorded tokenizer files; a checkpoint from
    before identities were recorded falls back to its HF source directory if it still exists."""
    plan: list[tuple[Path, list[str]]] = []
    if identity_dir is not None:
        keep = [n for n in identity if n != "config.json"]
        if tokenizer is not None:
            keep = [n for n in keep if n not in tokenizer_files(keep)]
        missing = [n for n in keep if not (identity_dir / n).is_file()]
        if missing:
            raise CheckpointError(f"{identity_dir}: recorded HF file(s) {', '.join(missing)} "
                                  "are missing")
        plan.append((identity_dir, keep))
    if tokenizer is not None:
        names = identity_files(tokenizer)
        if legacy_source is None or Path(legacy_source) != tokenizer:
            names = tokenizer_files(names)
        plan.append((tokenizer, [n for n in names if n != "config.json"]))
    return plan
