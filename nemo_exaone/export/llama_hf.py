"""EXAONE 3.x as a Llama-compatible HF checkpoint (``LlamaForCausalLM``), streaming.

Why: EXAONE 3.x is Llama with other names, and serving engines know Llama. TensorRT-LLM's
PyTorch flow, vLLM and SGLang load ``LlamaForCausalLM`` directories without remote code, but
not (all) EXAONE 3.x's ``ExaoneForCausalLM``. Two sources, one writer:

* a Megatron checkpoint (``convert mcore-to-hf --arch llama``): each Megatron parameter is
  read, split into HF tensors by :data:`LLAMA_TABLE` and written, one at a time;
* an EXAONE HF directory of any config vintage :mod:`nemo_exaone.config.hf_config` reads
  (``convert hf-to-llama``): each tensor group is validated and renamed through the same table
  (EXAONE table -> full Megatron parameter -> Llama names), so both paths write identical
  tensors.

What the directory holds:

* safetensors shards (an index when more than one) under Llama's names (``model.embed_tokens``,
  ``model.layers.{i}.self_attn.{q,k,v,o}_proj``, ``mlp.{gate,up,down}_proj``,
  ``input_layernorm``, ``post_attention_layernorm``, ``model.norm``, ``lm_head``);
* ``config.json`` with ``model_type: llama``. The RoPE is written in both spellings, which say
  the same thing: ``rope_theta`` + ``rope_scaling`` (what transformers 4.4x, TensorRT-LLM and
  vLLM under transformers 4 read) and ``rope_parameters`` (transformers >= 5; when both are
  present transformers 5 takes ``rope_scaling`` and fills ``rope_theta`` into it, so they
  cannot disagree). ``attention_bias``/``mlp_bias`` false, ``head_dim`` stated (EXAONE 3.5
  2.4B's 80 is not hidden/heads in general), the token ids, no ``auto_map``;
* tied embeddings (EXAONE 3.5 2.4B): ``tie_word_embeddings: true`` and **no** ``lm_head``
  tensor. transformers ties ``lm_head`` to ``embed_tokens`` when the flag is set (an
  ``lm_head.weight`` in the file would be ignored or, in loaders that do not tie, loaded as a
  second copy), and vLLM's Llama skips ``lm_head.weight`` when tied; leaving it out is what
  ``save_pretrained`` of a tied Llama writes;
* ``generation_config.json`` (carried, or written from the token ids) and the tokenizer files,
  without remote code. The chat template is stored both in ``tokenizer_config.json``
  (``chat_template``, read by transformers 4.4x) and in ``chat_template.jinja`` (which
  transformers >= 4.5x prefers when present); a source without one gets the EXAONE 3.x
  template of :mod:`nemo_exaone.data.chat_format`.

EXAONE 4.0 is refused (:func:`refuse_unless_llama`): Llama cannot express its QK-norm,
post-norm sublayers or hybrid sliding-window / no-RoPE layers. Its native
``Exaone4ForCausalLM`` export (``convert mcore-to-hf`` without ``--arch``) is what serving
engines load: TensorRT-LLM's PyTorch flow registers that class
(``tensorrt_llm/_torch/models/modeling_exaone4.py``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from nemo_exaone.checkpoint.errors import CheckpointError
from nemo_exaone.checkpoint.exaone_hf import (
    EXAONE_HF_TABLE,
    EXAONE_LLAMA_NAMES_TABLE,
    copy_identity,
    exaone_dims,
    identity_files,
    tokenizer_files,
)
from nemo_exaone.checkpoint.mapping import BoundMapping, WeightTable
from nemo_exaone.checkpoint.report import ConversionReport
from nemo_exaone.config.presets import ExaoneArch

# Megatron <-> Llama HF names: EXAONE 3.x's table under LG's own rename to Llama names.
LLAMA_TABLE: WeightTable = EXAONE_LLAMA_NAMES_TABLE

NATIVE_EXAONE4_LOADERS = (
    "transformers >= 4.54 (Exaone4ForCausalLM, no remote code), vLLM, and TensorRT-LLM's "
    "PyTorch flow (tensorrt_llm/_torch/models/modeling_exaone4.py registers Exaone4ForCausalLM)")


class LlamaExportError(CheckpointError):
    """A model the Llama architecture cannot express (names what is missing)."""


def refuse_unless_llama(arch: ExaoneArch, where: str) -> None:
    """Raise :class:`LlamaExportError` unless ``arch`` is EXAONE 3.x (Llama with other names).

    EXAONE 4.0 is refused naming each feature Llama lacks, and pointing at the native export.
    """
    if arch.model_type == "exaone":
        return
    if arch.model_type != "exaone4":
        raise LlamaExportError(f"{where}: model_type={arch.model_type!r} has no Llama form; "
                               "only EXAONE 3.x (model_type 'exaone') is Llama-compatible")
    kinds = list(arch.layer_types or ())
    sliding = sum(k == "sliding_attention" for k in kinds)
    hybrid = (f"{sliding} of its {len(kinds)} layers use {arch.sliding_window}-token "
              "sliding-window attention with RoPE and the others global attention without "
              "RoPE" if sliding else "this model has global attention in every layer, but "
              "the 4.0 layer differs from Llama's all the same")
    raise LlamaExportError(
        f"{where}: EXAONE 4.0 (model_type 'exaone4', Exaone4ForCausalLM) cannot be written as "
        "LlamaForCausalLM, which cannot express: per-head RMSNorm on queries and keys "
        "(self_attn.q_norm / k_norm); post-norm sublayers (post_attention_layernorm and "
        "post_feedforward_layernorm applied to each sublayer's output before the residual "
        "add, with no pre-norm); hybrid layers (sliding-window attention with RoPE and global "
        f"attention without RoPE, per layer_types; {hybrid}). Export the native "
        "Exaone4ForCausalLM instead: `nemo-exaone convert mcore-to-hf --ckpt DIR --out DIR` "
        f"(without --arch llama), which {NATIVE_EXAONE4_LOADERS} load")


def llama_rope(arch: ExaoneArch) -> dict[str, Any]:
    """The RoPE keys of a Llama config.json, in the 4.x and the >= 5 spelling at once."""
    theta = float(arch.rope_theta)
    scaling = None
    if arch.rope_scaling is not None:
        scaling = {"rope_type": "llama3", **{k: arch.rope_scaling[k] for k in (
            "factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")}}
    parameters = dict(scaling or {"rope_type": "default"}, rope_theta=theta)
    return {"rope_theta": theta, "rope_scaling": scaling, "rope_parameters": parameters}


def llama_config(arch: ExaoneArch, dtype_name: str | None) -> dict[str, Any]:
    """config.json of the Llama form of ``arch`` (EXAONE 3.x; see :func:`refuse_unless_llama`)."""
    config: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": arch.vocab_size, "hidden_size": arch.hidden_size,
        "intermediate_size": arch.intermediate_size, "num_hidden_layers": arch.num_layers,
        "num_attention_heads": arch.num_attention_heads,
        "num_key_value_heads": arch.num_key_value_heads, "head_dim": int(arch.head_dim),
        "hidden_act": arch.activation_function,
        "max_position_embeddings": arch.max_position_embeddings,
        "rms_norm_eps": arch.layer_norm_epsilon, "initializer_range": arch.initializer_range,
        "attention_bias": False, "mlp_bias": False, "attention_dropout": arch.attention_dropout,
        "pretraining_tp": 1, "use_cache": True,
        "tie_word_embeddings": bool(arch.tie_word_embeddings),
        "bos_token_id": arch.bos_token_id, "eos_token_id": arch.eos_token_id,
        "pad_token_id": arch.pad_token_id,
        **llama_rope(arch),
    }
    if dtype_name is not None:
        config["torch_dtype"] = dtype_name
    return dict(sorted(config.items()))


# ----------------------------------------------------------------------------- tokenizer
def _identity_plan(directory: Path, names: list[str]) -> list[tuple[Path, list[str]]]:
    """Tokenizer files and generation_config.json of ``names``; config.json and code left out."""
    keep = [n for n in tokenizer_files(names) if not n.endswith(".py")]
    if "generation_config.json" in names:
        keep.append("generation_config.json")
    return [(directory, sorted(keep))] if keep else []


def _finish_identity(tmp: Path, arch: ExaoneArch, present: set[str]) -> list[str]:
    """Write generation_config.json if none was carried, drop ``auto_map`` from the tokenizer
    config and store the chat template in both places transformers reads; report lines."""
    from nemo_exaone.data.chat_format import CHAT_TEMPLATE

    notes = []
    if "generation_config.json" not in present:
        generation = {"bos_token_id": arch.bos_token_id, "eos_token_id": arch.eos_token_id,
                      "pad_token_id": arch.pad_token_id}
        (tmp / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
        notes.append("generation_config.json: written from the token ids (none carried)")
    config_path = tmp / "tokenizer_config.json"
    if not config_path.is_file():
        if tokenizer_files(sorted(present)):
            notes.append("no tokenizer_config.json carried: the chat template is not written")
        return notes
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if config.pop("auto_map", None) is not None:
        notes.append("tokenizer_config.json: auto_map dropped (no remote code)")
    if config.get("tokenizer_class") == "TokenizersBackend" and (tmp / "tokenizer.json").is_file():
        # transformers 5's name for the tokenizer.json-backed class; 4.x (which TensorRT-LLM
        # 1.2 and many vLLM installs run) knows it only as PreTrainedTokenizerFast, an alias in 5.
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
        notes.append("tokenizer_config.json: tokenizer_class TokenizersBackend -> "
                     "PreTrainedTokenizerFast (the same class in transformers 5; 4.x knows only "
                     "this name)")
    jinja = tmp / "chat_template.jinja"
    template = config.get("chat_template")
    if jinja.is_file():  # transformers >= 4.5x prefers the file: it is the template in use
        template = jinja.read_text(encoding="utf-8")
    if template is None:
        template = CHAT_TEMPLATE
        notes.append("chat template: none carried; wrote the EXAONE 3.x template")
    if isinstance(template, str):
        config["chat_template"] = template
        jinja.write_text(template, encoding="utf-8")
        notes.append("chat template: in tokenizer_config.json and chat_template.jinja")
    config_path.write_text(json.dumps(config, ensure_ascii=False, indent=2) + "\n",
                           encoding="utf-8")
    return notes


# ----------------------------------------------------------------------------- writer
TensorSource = Callable[[BoundMapping], torch.Tensor]


def _write_llama(out_dir: Path, arch: ExaoneArch, full_tensor: TensorSource,
                 stored_dtype: Callable[[str], torch.dtype], carried: list[tuple[Path, list[str]]],
                 *, inputs: list, input_flags: list[str], cast: torch.dtype | None,
                 shard_bytes: int, overwrite: bool, progress: bool | None, label: str,
                 source: str) -> ConversionReport:
    """Stream the Llama form of ``arch`` into ``out_dir`` (atomic: published only complete).

    ``full_tensor(bound)``: the full Megatron parameter of one :data:`LLAMA_TABLE` mapping;
    ``stored_dtype(megatron_name)``: its dtype, known before any tensor is read.
    """
    from nemo_exaone.checkpoint.dtypes import hf_dtype_name
    from nemo_exaone.checkpoint.progress import byte_progress
    from nemo_exaone.checkpoint.safetensors_io import ShardedSafetensorsWriter, TensorEntry
    from nemo_exaone.checkpoint.verify import verify_hf_checkpoint
    from nemo_exaone.config.hf_config import describe_rope
    from nemo_exaone.runtime.outputs import atomic_directory

    start = time.perf_counter()
    dims = exaone_dims(arch)
    bound = LLAMA_TABLE.bind(dims)
    entries = [TensorEntry(name, cast or stored_dtype(b.megatron), shape)
               for b in bound for name, shape in zip(b.targets, b.target_shapes)]
    total = sum(e.nbytes for e in entries)
    dtype_name = hf_dtype_name(entries[0].dtype)  # the embedding's
    details = [describe_rope(arch.rope_theta, arch.rope_scaling),
               f"LlamaForCausalLM, tie_word_embeddings={bool(arch.tie_word_embeddings)}"
               + (" (no lm_head tensor: transformers ties it to embed_tokens)"
                  if arch.tie_word_embeddings else "")]
    bar = byte_progress(total, label, progress)
    try:
        with atomic_directory(out_dir, overwrite=overwrite, inputs=inputs,
                              input_flags=input_flags, flag="--out",
                              verify=verify_hf_checkpoint) as tmp:
            writer = ShardedSafetensorsWriter(tmp, entries, shard_bytes)
            for mapping in bound:
                full = full_tensor(mapping)
                for name, tensor in zip(mapping.targets, mapping.from_megatron(full, dims)):
                    tensor = tensor if cast is None else tensor.to(cast)
                    writer.write(name, tensor)
                    bar.update(tensor.numel() * tensor.element_size())
                del full
            writer.close()
            for directory, names in carried:
                copy_identity(directory, tmp, names)
            present = {n for _, names in carried for n in names}
            details += _finish_identity(tmp, arch, present)
            (tmp / "config.json").write_text(
                json.dumps(llama_config(arch, dtype_name), indent=2) + "\n")
    finally:
        bar.close()
    details.append("carried: " + (", ".join(sorted(present)) or "nothing"))
    if not tokenizer_files(sorted(present)):
        details.append("no tokenizer files: AutoTokenizer cannot load this directory (pass "
                       "--tokenizer DIR)")
    return ConversionReport(label, source, str(out_dir), len(entries), total, total,
                            time.perf_counter() - start, details)


def _shard_bytes(max_shard_size: str | int) -> int:
    from nemo_exaone.checkpoint.safetensors_io import parse_size

    return parse_size(max_shard_size) if isinstance(max_shard_size, str) else max_shard_size


# ----------------------------------------------------------------------------- sources
def export_llama_from_mcore(
    ckpt_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    tokenizer_dir: str | os.PathLike | None = None,
    hf_config: str | os.PathLike | None = None,
    max_shard_size: str | int = "5GB",
    dtype: str = "keep",
    overwrite: bool = False,
    progress: bool | None = None,
) -> ConversionReport:
    """Megatron checkpoint (converted or from training) -> Llama-compatible HF directory.

    The tokenizer is the one the checkpoint carries (``hf_identity/``), ``tokenizer_dir``
    instead when given, else the recorded HF source for older checkpoints; ``hf_config``
    stands in for the recorded architecture (checkpoints written by other tools).
    """
    from nemo_exaone.checkpoint.dcp_io import DistCheckpointReader
    from nemo_exaone.checkpoint.dtypes import parse_dtype
    from nemo_exaone.checkpoint.mcore_layout import check_layout_covers, megatron_layout
    from nemo_exaone.checkpoint.mcore_to_hf import (
        check_stored_shapes,
        find_tokenizer_dir,
        plan_identity_files,
        read_param,
    )
    from nemo_exaone.checkpoint.metadata import read_metadata
    from nemo_exaone.runtime.outputs import check_output, refuse_overlap

    ckpt_dir, out_dir = Path(ckpt_dir).absolute(), Path(out_dir).absolute()
    inputs, input_flags = [ckpt_dir, hf_config], ["--ckpt", "--hf-config"]
    refuse_overlap(out_dir, inputs, output_flag="--out", input_flags=input_flags)
    identity_dir, identity = None, []
    if hf_config is not None:
        arch = ExaoneArch.from_hf_config(json.loads(Path(hf_config).read_text()),
                                         path=str(hf_config))
        source_dir = None
    else:
        metadata = read_metadata(ckpt_dir)
        arch, source_dir = metadata.arch(), metadata.hf_source_dir
        recorded = (metadata.extra or {}).get("hf_identity")
        if recorded:
            identity_dir, identity = ckpt_dir / recorded["dir"], list(recorded["files"])
            source_dir = None
    refuse_unless_llama(arch, str(ckpt_dir))
    tokenizer = find_tokenizer_dir(tokenizer_dir, source_dir)
    planned = plan_identity_files(identity_dir, identity, tokenizer,
                             legacy_source=source_dir if tokenizer_dir is None else None)
    carried = [p for directory, names in planned for p in _identity_plan(directory, names)]
    inputs.append(tokenizer)
    input_flags.append("--tokenizer" if tokenizer_dir is not None else
                       "the tokenizer directory (the checkpoint's recorded HF source)")
    refuse_overlap(out_dir, inputs, output_flag="--out", input_flags=input_flags)
    check_output(out_dir, overwrite, flag="--out")
    cast = parse_dtype(dtype)
    reader = DistCheckpointReader(ckpt_dir)
    layout = megatron_layout(arch, LLAMA_TABLE)
    check_layout_covers(layout, [b.megatron for b in LLAMA_TABLE.bind(exaone_dims(arch))])
    params = layout.params()
    check_stored_shapes(reader, layout.chunks, arch, ckpt_dir)
    return _write_llama(
        out_dir, arch, lambda b: read_param(reader, params[b.megatron]),
        lambda m: reader.tensor_metadata(params[m][0].key).properties.dtype, carried,
        inputs=inputs, input_flags=input_flags, cast=cast,
        shard_bytes=_shard_bytes(max_shard_size), overwrite=overwrite, progress=progress,
        label="mcore-to-llama", source=str(ckpt_dir))


def export_llama_from_hf(
    hf_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    tokenizer_dir: str | os.PathLike | None = None,
    max_shard_size: str | int = "5GB",
    dtype: str = "keep",
    overwrite: bool = False,
    progress: bool | None = None,
) -> ConversionReport:
    """EXAONE 3.x HF directory (``ExaoneForCausalLM``, any config vintage) -> Llama form.

    Every tensor is checked against config.json (headers only) before anything is written;
    the tokenizer comes from ``hf_dir`` unless ``tokenizer_dir`` replaces it.
    """
    from nemo_exaone.checkpoint.dtypes import parse_dtype
    from nemo_exaone.checkpoint.hf_source import HFSource, read_hf_arch
    from nemo_exaone.runtime.outputs import check_output, refuse_overlap

    hf_dir, out_dir = Path(hf_dir).absolute(), Path(out_dir).absolute()
    inputs: list = [hf_dir, tokenizer_dir]
    input_flags = ["--hf", "--tokenizer"]
    refuse_overlap(out_dir, inputs, output_flag="--out", input_flags=input_flags)
    arch = read_hf_arch(hf_dir)
    refuse_unless_llama(arch, str(hf_dir / "config.json"))
    check_output(out_dir, overwrite, flag="--out")
    cast = parse_dtype(dtype)
    source = HFSource(hf_dir, arch, EXAONE_HF_TABLE)
    by_megatron = {b.megatron: b for b in source.bound}
    names = identity_files(hf_dir)
    carried = _identity_plan(hf_dir, names)
    if tokenizer_dir is not None:
        if not Path(tokenizer_dir).is_dir():
            raise FileNotFoundError(f"--tokenizer {tokenizer_dir}: no such directory")
        own = [n for n in tokenizer_files(identity_files(tokenizer_dir)) if not n.endswith(".py")]
        carried = [(hf_dir, ["generation_config.json"])] if "generation_config.json" in names \
            else []
        carried.append((Path(tokenizer_dir), own))

    def stored(megatron: str) -> torch.dtype:
        return source.weights.tensors[by_megatron[megatron].targets[0]].dtype

    return _write_llama(
        out_dir, arch, lambda b: source.megatron_tensor(by_megatron[b.megatron]), stored,
        carried, inputs=inputs, input_flags=input_flags, cast=cast,
        shard_bytes=_shard_bytes(max_shard_size), overwrite=overwrite, progress=progress,
        label="hf-to-llama", source=str(hf_dir))
