"""NeMo 2 checkpoints <-> this package's Megatron checkpoints (the training loop's weights).

A NeMo 2 checkpoint's ``weights/`` is a Megatron distributed checkpoint of the same model under
``module.``-prefixed keys. :func:`nemo_to_mcore` rewrites it, streaming one parameter at a
time, as exactly what ``convert hf-to-mcore`` writes (same keys, chunks, metadata and HF
identity), so it initialises a stage of our loop at any TP/PP (``init.path``).
:func:`mcore_to_nemo` goes the other way through NeMo's own save (like the HF importer), so
NeMo loads it with its own strategy at any TP/PP.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from nemo_exaone.checkpoint.dcp_io import ChunkSpec, DistCheckpointReader, write_dcp
from nemo_exaone.checkpoint.dtypes import hf_dtype_name
from nemo_exaone.checkpoint.exaone4_hf import hf_table
from nemo_exaone.checkpoint.exaone_hf import IDENTITY_DIR, copy_identity, identity_files
from nemo_exaone.checkpoint.hf_to_mcore import chunk_of, write_megatron_files
from nemo_exaone.checkpoint.mcore_layout import megatron_layout
from nemo_exaone.checkpoint.mcore_to_hf import read_param
from nemo_exaone.checkpoint.metadata import CheckpointMetadata, read_metadata, write_metadata
from nemo_exaone.checkpoint.verify import verify_dist_checkpoint
from nemo_exaone.nemo.connectors import (
    HFExaoneImporter,
    load_table_weights,
    nemo_checkpoint_config,
    nemo_layout,
    verify_nemo_checkpoint,
)
from nemo_exaone.nemo.model import ExaoneConfig, ExaoneModel
from nemo_exaone.runtime.outputs import atomic_directory


def nemo_to_mcore(nemo_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
                  overwrite: bool = False) -> Path:
    """Write the Megatron checkpoint (ours) holding a NeMo 2 checkpoint's weights."""
    nemo_dir, out_dir = Path(nemo_dir).absolute(), Path(out_dir).absolute()
    arch = nemo_checkpoint_config(nemo_dir).to_arch()
    table = hf_table(arch)
    layout = megatron_layout(arch, table)
    stored = nemo_layout(arch, table)
    reader = DistCheckpointReader(nemo_dir / "weights")
    dtypes = {name: reader.tensor_metadata(chunks[0].key).properties.dtype
              for name, chunks in stored.items()}
    specs = [ChunkSpec(c.key, c.global_shape, c.offset, c.shape, dtypes[c.param])
             for c in layout.chunks]
    by_id = {(c.key, c.offset): c for c in layout.chunks}
    current: dict[str, object] = {"param": None, "tensor": None}

    def produce(spec: ChunkSpec) -> torch.Tensor:
        chunk = by_id[(spec.key, spec.offset)]
        if current["param"] != chunk.param:  # chunks come parameter by parameter
            current.update(param=None, tensor=None)
            current.update(param=chunk.param, tensor=read_param(reader, stored[chunk.param]))
        return chunk_of(current["tensor"], chunk)

    from nemo_exaone.runtime.versions import megatron_core_version

    identity = nemo_dir / IDENTITY_DIR
    names = identity_files(identity) if identity.is_dir() else []
    with atomic_directory(out_dir, overwrite=overwrite, inputs=[nemo_dir],
                          input_flags=["--nemo"], flag="--out",
                          verify=verify_dist_checkpoint) as tmp:
        write_dcp(tmp, specs, layout.objects, produce)
        current["tensor"] = None
        write_megatron_files(tmp, layout)
        copy_identity(identity, tmp / IDENTITY_DIR, names)
        write_metadata(tmp, CheckpointMetadata(
            hf_config=arch.to_hf_config(),
            dtype=",".join(sorted({hf_dtype_name(d) for d in dtypes.values()})),
            writer="nemo-to-mcore", megatron_core=megatron_core_version(),
            extra={"nemo_source_dir": str(nemo_dir),
                   **({"hf_identity": {"dir": IDENTITY_DIR, "files": names}} if names else {})}))
    return out_dir


def mcore_to_nemo(ckpt_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
                  overwrite: bool = False) -> Path:
    """Write a NeMo 2 checkpoint (NeMo's own save) holding one of our checkpoints' weights."""
    ckpt_dir, out_dir = Path(ckpt_dir).absolute(), Path(out_dir).absolute()
    metadata = read_metadata(ckpt_dir)
    arch = metadata.arch()
    table = hf_table(arch)
    layout = megatron_layout(arch, table)
    params = layout.params()
    reader = DistCheckpointReader(ckpt_dir)
    first = next(iter(params.values()))[0]
    dtype = reader.tensor_metadata(first.key).properties.dtype
    recorded = (metadata.extra or {}).get("hf_identity")
    identity_dir = ckpt_dir / recorded["dir"] if recorded else None
    config = ExaoneConfig.from_arch(arch, params_dtype=dtype, bf16=dtype == torch.bfloat16,
                                    fp16=dtype == torch.float16)
    tokenizer = None
    if identity_dir is not None and (identity_dir / "tokenizer_config.json").is_file():
        importer = HFExaoneImporter(str(identity_dir))  # its tokenizer staging, reused
        tokenizer = importer.tokenizer
    model = ExaoneModel(config, tokenizer=tokenizer)
    connector = HFExaoneImporter(str(ckpt_dir))
    from nemo.lightning.base import teardown

    trainer = connector.nemo_setup(model)
    try:
        load_table_weights(model.module, lambda name: read_param(reader, params[name]), table,
                           origin=str(ckpt_dir))
        with atomic_directory(out_dir, overwrite=overwrite, inputs=[ckpt_dir],
                              input_flags=["--ckpt"], flag="--out",
                              verify=verify_nemo_checkpoint) as tmp:
            connector.nemo_save(tmp, trainer)
            if identity_dir is not None:
                copy_identity(identity_dir, tmp / IDENTITY_DIR, identity_files(identity_dir))
    finally:
        teardown(trainer, model)
        if tokenizer is not None:
            import shutil

            shutil.rmtree(importer._tokenizer_dir.parent, ignore_errors=True)
    return out_dir
