"""HF EXAONE <-> NeMo 2 checkpoint connectors, driven by the package's one HF weight table.

``@io.model_importer(ExaoneModel, "hf")`` makes ``llm.import_ckpt(model=ExaoneModel(...),
source="hf:///path/to/EXAONE-3.5-2.4B-Instruct")`` work; ``@io.model_exporter(ExaoneModel,
"hf")`` makes ``llm.export_ckpt(path, target="hf")`` write an EXAONE HF directory.

Import reads the safetensors with our :class:`~nemo_exaone.checkpoint.hf_source.HFSource`
(EXAONE 3.x is remote code to transformers, so no HF model is instantiated), fills NeMo's model
through the table and saves it with NeMo's own trainer (``nemo_setup``/``nemo_save``): the
result is exactly what NeMo writes. The tokenizer (chat template included) goes into NeMo's
context as its ``AutoTokenizer``; the HF identity (config.json verbatim, generation config,
tokenizer files, remote code) is also kept beside it under ``hf_identity/``. Export streams
the weights out of the checkpoint's distributed-checkpoint files (no model, no trainer) with
the same table, so ``hf -> nemo -> hf`` is bit-exact.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from nemo.lightning import io
from nemo.lightning.base import teardown

from nemo_exaone.checkpoint.errors import CheckpointError
from nemo_exaone.checkpoint.exaone4_hf import hf_table
from nemo_exaone.checkpoint.exaone_hf import (
    IDENTITY_DIR,
    copy_identity,
    exaone_dims,
    export_hf_config,
    identity_files,
    tokenizer_files,
)
from nemo_exaone.checkpoint.hf_source import HFSource, read_hf_arch
from nemo_exaone.checkpoint.mcore_layout import LayoutChunk, megatron_layout
from nemo_exaone.checkpoint.mcore_to_hf import read_param
from nemo_exaone.checkpoint.safetensors_io import ShardedSafetensorsWriter, TensorEntry, parse_size
from nemo_exaone.checkpoint.verify import verify_hf_checkpoint
from nemo_exaone.config.presets import ExaoneArch
from nemo_exaone.nemo.model import ExaoneConfig, ExaoneModel
from nemo_exaone.runtime.outputs import atomic_directory, refuse_overlap

# NeMo's MegatronParallel wraps the Megatron model as ``module``: every stored key has it.
NEMO_KEY_PREFIX = "module."
TOKENIZER_SUBDIR = "nemo_tokenizer"  # NeMo's AutoTokenizer artifact inside context/


def _source_dtype(source: HFSource) -> torch.dtype:
    dtypes = {t.dtype for t in source.weights.tensors.values()}
    if len(dtypes) != 1:
        raise CheckpointError(f"{source.directory}: tensors of several dtypes "
                              f"({', '.join(sorted(map(str, dtypes)))}); NeMo keeps one "
                              "params_dtype")
    return dtypes.pop()


@io.model_importer(ExaoneModel, "hf")
class HFExaoneImporter(io.ModelConnector["ExaoneForCausalLM", ExaoneModel]):
    """An HF EXAONE 3.x directory -> a NeMo 2 checkpoint (``weights/`` + ``context/``)."""

    def init(self) -> ExaoneModel:
        return ExaoneModel(self.config, tokenizer=self.tokenizer)

    @property
    def hf_dir(self) -> Path:
        return Path(str(self))

    @property
    def arch(self) -> ExaoneArch:
        if not hasattr(self, "_arch"):
            self._arch = read_hf_arch(self.hf_dir)
        return self._arch

    @property
    def config(self) -> ExaoneConfig:
        """The NeMo config of the checkpoint: its architecture, in its stored dtype."""
        source = HFSource(self.hf_dir, self.arch, hf_table(self.arch))
        dtype = _source_dtype(source)
        return ExaoneConfig.from_arch(self.arch, params_dtype=dtype,
                                      bf16=dtype == torch.bfloat16, fp16=dtype == torch.float16)

    @property
    def tokenizer(self):
        """NeMo's AutoTokenizer over a private copy of the tokenizer files (NeMo copies the
        whole directory it is given into the checkpoint's context, so not the weights')."""
        from nemo.collections.common.tokenizers.huggingface.auto_tokenizer import AutoTokenizer

        names = tokenizer_files(identity_files(self.hf_dir))
        if not names:
            return None
        if getattr(self, "_tokenizer_dir", None) is None:
            # NeMo names the artifact after the directory: context/nemo_tokenizer, as its own.
            self._tokenizer_dir = Path(tempfile.mkdtemp(prefix="nemo_exaone_")) / TOKENIZER_SUBDIR
            copy_identity(self.hf_dir, self._tokenizer_dir, names)
        return AutoTokenizer(str(self._tokenizer_dir))

    def apply(self, output_path: Path, overwrite: bool = False) -> Path:
        """Write the NeMo 2 checkpoint at ``output_path`` (atomically: complete or absent)."""
        output_path = Path(output_path).absolute()
        table = hf_table(self.arch)
        source = HFSource(self.hf_dir, self.arch, table)
        bound = {b.megatron: b for b in source.bound}
        try:
            target = self.init()
            trainer = self.nemo_setup(target)
            try:
                load_table_weights(target.module, lambda name: source.megatron_tensor(
                    bound[name]), table, origin=str(self.hf_dir))
                with atomic_directory(output_path, overwrite=overwrite, inputs=[self.hf_dir],
                                      input_flags=["source"], flag="output_path",
                                      verify=verify_nemo_checkpoint) as tmp:
                    self.nemo_save(tmp, trainer)
                    names = identity_files(self.hf_dir)
                    copy_identity(self.hf_dir, tmp / IDENTITY_DIR, names)
            finally:
                teardown(trainer, target)
        finally:
            if getattr(self, "_tokenizer_dir", None) is not None:
                shutil.rmtree(self._tokenizer_dir.parent, ignore_errors=True)
                self._tokenizer_dir = None
        return output_path


def load_table_weights(module: torch.nn.Module, tensor_for, table, origin: str) -> None:
    """Fill a Megatron model's parameters from ``tensor_for(canonical_name)`` (full, TP=1).

    Names are mapped through the table's aliases (local-spec norms); every parameter must be
    covered and every shape must agree, or the error names the parameter and ``origin``.
    """
    state = {}
    for name, param in module.state_dict(keep_vars=True).items():
        if name.endswith("_extra_state"):
            continue
        tensor = tensor_for(table.canonical_megatron_name(name))
        if tuple(tensor.shape) != tuple(param.shape):
            raise CheckpointError(f"{origin}: {name} has shape {tuple(tensor.shape)}, the NeMo "
                                  f"model expects {tuple(param.shape)}")
        state[name] = tensor.to(param.dtype) if tensor.dtype != param.dtype else tensor
    missing, unexpected = module.load_state_dict(state, strict=False, assign=True)
    missing = [k for k in missing if not k.endswith("_extra_state")]
    if missing or unexpected:
        raise CheckpointError(f"{origin}: parameters not filled {missing}, unknown {unexpected}")


def verify_nemo_checkpoint(path: Path) -> None:
    """A NeMo 2 checkpoint has its weights (DCP metadata) and its context (io.json)."""
    for needed in ("weights/.metadata", "weights/metadata.json", "context/io.json"):
        if not (path / needed).is_file():
            raise CheckpointError(f"{path}: {needed} is missing (incomplete NeMo 2 checkpoint)")


# --------------------------------------------------------------------------- export
def nemo_layout(arch: ExaoneArch, table) -> dict[str, list[LayoutChunk]]:
    """Megatron parameter (table spelling) -> its stored chunks, keyed as NeMo stores them."""
    import dataclasses

    layout = megatron_layout(arch, table)
    out: dict[str, list[LayoutChunk]] = {}
    for chunk in layout.chunks:
        out.setdefault(chunk.param, []).append(
            dataclasses.replace(chunk, key=NEMO_KEY_PREFIX + chunk.key))
    return out


def nemo_checkpoint_config(path: str | os.PathLike) -> ExaoneConfig:
    """The ExaoneConfig recorded in a NeMo 2 checkpoint's context."""
    path = Path(path)
    if not (path / "context").is_dir():
        raise CheckpointError(f"{path}: no context/ directory (not a NeMo 2 checkpoint)")
    config = io.load_context(path / "context", subpath="model.config")
    if not isinstance(config, ExaoneConfig):
        raise CheckpointError(f"{path}: the checkpoint's model config is "
                              f"{type(config).__name__}, not an ExaoneConfig")
    return config


def read_nemo_weights(path: str | os.PathLike, arch: ExaoneArch, table=None):
    """Yield (canonical Megatron name, full tensor) for each parameter of a NeMo 2 checkpoint,
    one at a time, from its distributed-checkpoint files (any TP/PP that saved it)."""
    from nemo_exaone.checkpoint.dcp_io import DistCheckpointReader

    weights = Path(path) / "weights"
    table = table or hf_table(arch)
    reader = DistCheckpointReader(weights)
    params = nemo_layout(arch, table)
    for name, chunks in params.items():
        for chunk in chunks:
            md = reader.metadata.state_dict_metadata.get(chunk.key)
            if md is None:
                raise CheckpointError(f"{weights}: tensor {chunk.key!r} is missing")
            if tuple(md.size) != chunk.global_shape:
                raise CheckpointError(
                    f"{weights}: tensor {chunk.key!r} has shape {tuple(md.size)}, the recorded "
                    f"config implies {chunk.global_shape}")
        yield name, read_param(reader, chunks)


@io.model_exporter(ExaoneModel, "hf")
class HFExaoneExporter(io.ModelConnector[ExaoneModel, "ExaoneForCausalLM"]):
    """A NeMo 2 EXAONE checkpoint -> an HF EXAONE 3.x directory (safetensors)."""

    def init(self, dtype: torch.dtype = torch.bfloat16) -> Any:
        raise NotImplementedError("the EXAONE exporter streams weights; it builds no HF model")

    @property
    def config(self) -> ExaoneConfig:
        return nemo_checkpoint_config(str(self))

    def apply(self, output_path: Path, target_model_name: str | None = None,
              overwrite: bool = False, max_shard_size: str = "5GB") -> Path:
        return export_nemo_to_hf(Path(str(self)), output_path, overwrite=overwrite,
                                 max_shard_size=max_shard_size)


def export_nemo_to_hf(nemo_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
                      overwrite: bool = False, max_shard_size: str | int = "5GB") -> Path:
    """Write the HF EXAONE directory of a NeMo 2 checkpoint (atomically)."""
    nemo_dir, out_dir = Path(nemo_dir).absolute(), Path(out_dir).absolute()
    refuse_overlap(out_dir, [nemo_dir], output_flag="--out", input_flags=["--nemo"])
    config = nemo_checkpoint_config(nemo_dir)
    arch = config.to_arch()
    table = hf_table(arch)
    dims = exaone_dims(arch)
    bound = table.bind(dims)
    from nemo_exaone.checkpoint.dcp_io import DistCheckpointReader

    reader = DistCheckpointReader(nemo_dir / "weights")
    params = nemo_layout(arch, table)
    stored = {name: reader.tensor_metadata(chunks[0].key).properties.dtype
              for name, chunks in params.items()
              if chunks[0].key in reader.metadata.state_dict_metadata}
    missing = [chunks[0].key for name, chunks in params.items() if name not in stored]
    if missing:
        raise CheckpointError(f"{nemo_dir}/weights: tensor(s) {', '.join(missing)} missing")
    entries = [TensorEntry(name, stored[b.megatron], shape)
               for b in bound for name, shape in zip(b.targets, b.target_shapes)]
    shard_bytes = parse_size(max_shard_size) if isinstance(max_shard_size, str) else max_shard_size
    identity = nemo_dir / IDENTITY_DIR
    tokenizer = nemo_dir / "context" / TOKENIZER_SUBDIR
    with atomic_directory(out_dir, overwrite=overwrite, inputs=[nemo_dir], input_flags=["--nemo"],
                          flag="--out", verify=verify_hf_checkpoint) as tmp:
        writer = ShardedSafetensorsWriter(tmp, entries, shard_bytes)
        weights = dict.fromkeys(params)  # read lazily, in table order
        iterator = read_nemo_weights(nemo_dir, arch, table)
        for mapping in bound:
            while weights.get(mapping.megatron) is None:
                name, tensor = next(iterator)
                weights[name] = tensor
            full = weights.pop(mapping.megatron)
            for name, tensor in zip(mapping.targets, mapping.from_megatron(full, dims)):
                writer.write(name, tensor)
        writer.close()
        if identity.is_dir():  # recorded at import: written back as it was
            names = [n for n in identity_files(identity) if n != "config.json"]
            copy_identity(identity, tmp, names)
        elif tokenizer.is_dir():  # a checkpoint NeMo saved itself: its tokenizer artifact
            copy_identity(tokenizer, tmp, tokenizer_files(identity_files(tokenizer)))
        present = set(identity_files(tmp))
        hf_config, _ = export_hf_config(arch, present)
        (tmp / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
    return out_dir


def import_hf_to_nemo(hf_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
                      overwrite: bool = False) -> Path:
    """``llm.import_ckpt`` of an HF EXAONE directory, with our output rules: the NeMo 2
    checkpoint appears complete or not at all, and an existing one is replaced only with
    ``overwrite`` (NeMo's own ``import_ckpt`` deletes it before writing)."""
    hf_dir = Path(hf_dir).absolute()
    if not hf_dir.is_dir():
        raise FileNotFoundError(f"--hf {hf_dir}: no such directory")
    importer = ExaoneModel.importer(f"hf://{hf_dir}")
    return importer.apply(Path(out_dir).absolute(), overwrite=overwrite)
