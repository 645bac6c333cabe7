"""Megatron checkpoint -> TensorRT-LLM engine-flow checkpoint (``config.json`` + ``rank{r}.safetensors``).

EXAONE 3.x is Llama with other names; TensorRT-LLM builds it with its LLaMA class
(``ExaoneForCausalLM`` maps there). The files are what ``trtllm-build --checkpoint_dir`` reads:

- ``config.json``: ``PretrainedConfig`` + ``LLaMAConfig`` fields (``architecture``, ``dtype``,
  ``logits_dtype``, sizes, ``hidden_act`` "silu", ``norm_epsilon``, ``position_embedding_type``
  "rope_gpt_neox", ``rotary_base``, ``rotary_scaling`` = HF ``rope_scaling`` verbatim,
  ``mapping`` {world_size, tp_size, pp_size}, ``quantization`` (only ``QuantConfig``'s own keys:
  its ``from_dict`` is ``cls(**config)``), ``tie_word_embeddings``, ``mlp_bias``/``attn_bias``).
- per rank: ``transformer.vocab_embedding.weight`` (replicated), per layer
  ``input_layernorm``, ``attention.qkv`` (this rank's q heads, then its k heads, then its v
  heads; KV heads duplicated up to ``tp`` when ``num_key_value_heads < tp``), ``attention.dense``
  (split on the input dim), ``post_layernorm``, ``mlp.fc`` = gate projection (EXAONE
  ``c_fc_0``; the activation applies to it), ``mlp.gate`` = up projection (``c_fc_1``), both
  split on dim 0, ``mlp.proj`` (split on dim 1); ``transformer.ln_f``; ``lm_head`` zero-padded
  to a multiple of ``tp`` rows and split on dim 0, written explicitly for tied models too.
- FP8 (``quant_algo: "FP8"``, ``exclude_modules: ["lm_head"]``): each of qkv, dense, fc, gate,
  proj stores its weight as float8_e4m3fn plus float32 ``weights_scaling_factor`` and
  ``activation_scaling_factor`` of shape (1,), both dequantization multipliers (amax / 448).
  One weight scale covers the fused q/k/v weight (max over the three) and fc/gate share theirs
  (the builder fuses them into one GEMM with one scale); the activation scales come from
  :mod:`nemo_exaone.export.fp8_calibration`. ``--fp8-kv-cache`` adds
  ``kv_cache_quant_algo: "FP8"`` and ``attention.kv_cache_scaling_factor`` = max(calibrated
  post-RoPE key amax, value amax) / 448 (TensorRT-LLM's own HF converter writes 1.0).

Checked against NVIDIA/TensorRT-LLM's public source as a code index stores it: one version
of each file, at the commit named (the whole repository, 2.5 GB, could not be fetched, so which
release tag each commit belongs to was not established; a stored
``tensorrt_llm/version.py``, at b35ac1b64368, reads 1.2.0rc2): ``tensorrt_llm/models/llama/
convert.py`` @04a2cacbfd3b (EXAONE ``param_name_map``: ``mlp.fc`` <- ``c_fc_0``, ``mlp.gate``
<- ``c_fc_1``; ``dup_kv_weight``; per-rank ``concat(split q, split k, split v)``; tied
``lm_head`` padded with ``pad_vocab_size`` and split; FP8 KV scale 1.0),
``tensorrt_llm/models/llama/config.py`` @04100fd0a709 (EXAONE: ``hidden_act`` <-
``activation_function``, ``norm_epsilon`` <- ``layer_norm_epsilon``, ``rotary_scaling`` <-
``rope_scaling``), ``tensorrt_llm/models/modeling_utils.py`` @01ea6d79d454 (``QuantConfig``
fields, ``PretrainedConfig`` fields), ``tensorrt_llm/quantization/layers.py`` (``FP8Linear``:
fp8 weight (out, in), float32 ``activation_scaling_factor``/``weights_scaling_factor`` (1,)),
``tensorrt_llm/layers/attention.py`` (``rotary_scaling`` "type" or "rope_type"),
``docs/source/architecture/checkpoint.md`` @01c4ece911eb (file layout, FP8/KV scale names).

EXAONE 4.0 (QK-norm, post-norm, hybrid sliding windows) has no engine-flow class: it is
refused, pointing at the HF export for TensorRT-LLM's PyTorch flow (``Exaone4ForCausalLM``).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nemo_exaone.checkpoint.errors import CheckpointError
from nemo_exaone.checkpoint.report import ConversionReport
from nemo_exaone.checkpoint.safetensors_io import SafetensorsStreamWriter, TensorEntry
from nemo_exaone.config.errors import InputError
from nemo_exaone.config.presets import ExaoneArch
from nemo_exaone.export.fp8_calibration import E4M3_MAX, MIN_AMAX, Calibration

DTYPES: dict[str, torch.dtype] = {
    "bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32,
}
FP8 = torch.float8_e4m3fn
SCALE_SHAPE = (1,)
EMBEDDING = "embedding.word_embeddings.weight"
FINAL_NORM = "decoder.final_layernorm.weight"
OUTPUT = "output_layer.weight"
LAYER_PREFIX = "decoder.layers.{i}."
# Megatron parameter suffix (per layer) -> TensorRT-LLM module(s) it becomes.
LAYER_PARAMS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("self_attention.linear_qkv.layer_norm_weight", ("input_layernorm",)),
    ("self_attention.linear_qkv.weight", ("attention.qkv",)),
    ("self_attention.linear_proj.weight", ("attention.dense",)),
    ("mlp.linear_fc1.layer_norm_weight", ("post_layernorm",)),
    ("mlp.linear_fc1.weight", ("mlp.fc", "mlp.gate")),
    ("mlp.linear_fc2.weight", ("mlp.proj",)),
)
QUANTIZED = ("attention.qkv", "attention.dense", "mlp.fc", "mlp.gate", "mlp.proj")
# Which calibrated input range each quantized module uses (fc and gate share their input).
ACTIVATION_OF = {"attention.qkv": "qkv", "attention.dense": "dense", "mlp.fc": "fc",
                 "mlp.gate": "fc", "mlp.proj": "proj"}


@dataclass(frozen=True)
class TrtllmOptions:
    """What the export writes: tensor parallel size, weight dtype, FP8 switches."""

    tp: int = 1
    dtype: str = "bfloat16"
    fp8: bool = False
    fp8_kv_cache: bool = False

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]


# ------------------------------------------------------------------------- checks and sizes
def check_exportable(arch: ExaoneArch, options: TrtllmOptions) -> None:
    """Refuse what the engine flow's LLaMA class or the chosen TP cannot express."""
    if arch.model_type != "exaone":
        raise InputError(
            f"model_type {arch.model_type!r}: TensorRT-LLM's engine flow (LLaMA class) cannot "
            "express EXAONE 4.0 (QK-norm, post-norm, hybrid sliding-window layers). Export an "
            "HF checkpoint instead (nemo-exaone convert mcore-to-hf) and serve it with "
            "TensorRT-LLM's PyTorch flow (LLM API / trtllm-serve), which knows "
            "Exaone4ForCausalLM")
    if options.dtype not in DTYPES:
        raise InputError(f"--dtype {options.dtype!r}: choose one of {', '.join(DTYPES)}")
    if options.fp8_kv_cache and not options.fp8:
        raise InputError("--fp8-kv-cache needs --fp8 (the KV scales come from its calibration)")
    tp = options.tp
    if tp < 1:
        raise InputError(f"--tp {tp}: must be a positive integer")
    heads, kv = arch.num_attention_heads, arch.num_key_value_heads
    if heads % tp:
        raise InputError(f"--tp {tp}: num_attention_heads={heads} is not divisible by it")
    if kv >= tp and kv % tp:
        raise InputError(f"--tp {tp}: num_key_value_heads={kv} is not divisible by it")
    if kv < tp and tp % kv:
        raise InputError(f"--tp {tp}: KV heads are duplicated up to tp, which needs tp to be a "
                         f"multiple of num_key_value_heads={kv}")
    if arch.intermediate_size % tp:
        raise InputError(f"--tp {tp}: intermediate_size={arch.intermediate_size} is not "
                         "divisible by it")


def padded_vocab(vocab_size: int, tp: int) -> int:
    """``lm_head`` rows: the vocabulary rounded up to a multiple of ``tp``."""
    return -(-vocab_size // tp) * tp


def kv_heads_per_rank(arch: ExaoneArch, tp: int) -> int:
    return max(arch.num_key_value_heads, tp) // tp


def trtllm_config(arch: ExaoneArch, options: TrtllmOptions) -> dict[str, Any]:
    """The checkpoint's ``config.json``."""
    quantization: dict[str, Any] = {"quant_algo": None, "kv_cache_quant_algo": None,
                                    "exclude_modules": None}
    if options.fp8:
        quantization = {"quant_algo": "FP8",
                        "kv_cache_quant_algo": "FP8" if options.fp8_kv_cache else None,
                        "exclude_modules": ["lm_head"]}
    return {
        "architecture": "LlamaForCausalLM",
        "dtype": options.dtype,
        "logits_dtype": "float32",
        "vocab_size": arch.vocab_size,
        "max_position_embeddings": arch.max_position_embeddings,
        "hidden_size": arch.hidden_size,
        "num_hidden_layers": arch.num_layers,
        "num_attention_heads": arch.num_attention_heads,
        "num_key_value_heads": arch.num_key_value_heads,
        "head_size": int(arch.head_dim),
        "hidden_act": arch.activation_function,
        "intermediate_size": arch.intermediate_size,
        "norm_epsilon": arch.layer_norm_epsilon,
        "position_embedding_type": "rope_gpt_neox",
        "rotary_base": arch.rope_theta,
        "rotary_scaling": None if arch.rope_scaling is None else dict(arch.rope_scaling),
        "use_parallel_embedding": False,
        "embedding_sharding_dim": 0,
        "tie_word_embeddings": bool(arch.tie_word_embeddings),
        "mlp_bias": False,
        "attn_bias": False,
        "mapping": {"world_size": options.tp, "tp_size": options.tp, "pp_size": 1},
        "quantization": quantization,
    }


# ------------------------------------------------------------------------- the shape plan
def _linear_entries(prefix: str, shape: tuple[int, ...], options: TrtllmOptions
                    ) -> list[TensorEntry]:
    if not options.fp8:
        return [TensorEntry(f"{prefix}.weight", options.torch_dtype, shape)]
    return [TensorEntry(f"{prefix}.weight", FP8, shape),
            TensorEntry(f"{prefix}.weights_scaling_factor", torch.float32, SCALE_SHAPE),
            TensorEntry(f"{prefix}.activation_scaling_factor", torch.float32, SCALE_SHAPE)]


def plan_groups(arch: ExaoneArch, options: TrtllmOptions) -> list[tuple[str, list[TensorEntry]]]:
    """(Megatron parameter, the tensors every rank file gets from it) in file order.

    Shape-only (no weights): the writer writes exactly this, and tests check it for every
    preset. Every rank's file has the same names, shapes and dtypes.
    """
    tp, dtype, d = options.tp, options.torch_dtype, int(arch.head_dim)
    hidden = arch.hidden_size
    q_rows = arch.num_attention_heads // tp * d
    kv_rows = kv_heads_per_rank(arch, tp) * d
    inter = arch.intermediate_size // tp
    out: list[tuple[str, list[TensorEntry]]] = []
    embedding = [TensorEntry("transformer.vocab_embedding.weight", dtype,
                             (arch.vocab_size, hidden))]
    lm_head = [TensorEntry("lm_head.weight", dtype, (padded_vocab(arch.vocab_size, tp) // tp,
                                                     hidden))]
    out.append((EMBEDDING, embedding + (lm_head if arch.tie_word_embeddings else [])))
    for i in range(arch.num_layers):
        t = f"transformer.layers.{i}."
        shapes = {"input_layernorm": (hidden,), "post_layernorm": (hidden,),
                  "attention.qkv": (q_rows + 2 * kv_rows, hidden),
                  "attention.dense": (hidden, q_rows), "mlp.fc": (inter, hidden),
                  "mlp.gate": (inter, hidden), "mlp.proj": (hidden, inter)}
        for suffix, modules in LAYER_PARAMS:
            entries: list[TensorEntry] = []
            for module in modules:
                if module in QUANTIZED:
                    entries += _linear_entries(t + module, shapes[module], options)
                else:
                    entries.append(TensorEntry(f"{t}{module}.weight", dtype, shapes[module]))
                if module == "attention.qkv" and options.fp8_kv_cache:
                    entries.append(TensorEntry(f"{t}attention.kv_cache_scaling_factor",
                                               torch.float32, SCALE_SHAPE))
            out.append((LAYER_PREFIX.format(i=i) + suffix, entries))
    out.append((FINAL_NORM, [TensorEntry("transformer.ln_f.weight", dtype, (hidden,))]))
    if not arch.tie_word_embeddings:
        out.append((OUTPUT, lm_head))
    return out


def plan_rank_tensors(arch: ExaoneArch, options: TrtllmOptions) -> list[TensorEntry]:
    """Every tensor of one ``rank{r}.safetensors`` (the same for every rank), in file order."""
    return [entry for _, entries in plan_groups(arch, options) for entry in entries]


# ------------------------------------------------------------------------- tensor splitting
def split_rows(tensor: torch.Tensor, tp: int) -> list[torch.Tensor]:
    return [part.contiguous() for part in tensor.chunk(tp, dim=0)]


def split_cols(tensor: torch.Tensor, tp: int) -> list[torch.Tensor]:
    return [part.contiguous() for part in tensor.chunk(tp, dim=1)]


def duplicate_kv(weight: torch.Tensor, kv_heads: int, tp: int) -> torch.Tensor:
    """Each KV head repeated ``tp // kv_heads`` times in place, so rank r gets head
    ``r // (tp // kv_heads)`` (TensorRT-LLM's ``dup_kv_weight``)."""
    if kv_heads >= tp:
        return weight
    reps = tp // kv_heads
    rows = weight.shape[0] // kv_heads
    return weight.reshape(kv_heads, 1, rows, -1).expand(kv_heads, reps, rows, weight.shape[-1]) \
        .reshape(kv_heads * reps * rows, -1)


def qkv_rank_weights(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kv_heads: int,
                     tp: int) -> list[torch.Tensor]:
    """Per rank: concat(its q heads, its k heads, its v heads) on dim 0."""
    k, v = duplicate_kv(k, kv_heads, tp), duplicate_kv(v, kv_heads, tp)
    return [torch.cat(parts, dim=0)
            for parts in zip(split_rows(q, tp), split_rows(k, tp), split_rows(v, tp))]


def lm_head_rank_weights(weight: torch.Tensor, tp: int) -> list[torch.Tensor]:
    pad = padded_vocab(weight.shape[0], tp) - weight.shape[0]
    if pad:
        weight = torch.nn.functional.pad(weight, (0, 0, 0, pad))
    return split_rows(weight, tp)


def quantize_fp8(weight: torch.Tensor, scale: float) -> torch.Tensor:
    """float8_e4m3fn ``weight / scale`` (saturated at +-448)."""
    return (weight.float() / scale).clamp_(-E4M3_MAX, E4M3_MAX).to(FP8)


def weight_scale(*weights: torch.Tensor) -> float:
    """One per-tensor dequantization scale covering all ``weights`` (amax / 448)."""
    amax = max(float(w.detach().abs().max()) for w in weights)
    return max(amax, MIN_AMAX) / E4M3_MAX


# ------------------------------------------------------------------------- conversion
class _Converter:
    """Turns one full Megatron parameter into each rank's tensors (name -> per-rank list)."""

    def __init__(self, arch: ExaoneArch, options: TrtllmOptions,
                 calibration: Calibration | None) -> None:
        from nemo_exaone.checkpoint.exaone_hf import exaone_dims

        self.arch, self.options, self.calibration = arch, options, calibration
        self.dims = exaone_dims(arch)

    def _cast(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        return [t.to(self.options.torch_dtype) for t in tensors]

    def _replicated(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        """The same tensor for every rank, cast once (an embedding can be gigabytes)."""
        return [tensor.to(self.options.torch_dtype)] * self.options.tp

    def _linear(self, prefix: str, layer: int, parts: list[torch.Tensor], scale_of: float | None
                ) -> dict[str, list[torch.Tensor]]:
        if not self.options.fp8:
            return {f"{prefix}.weight": self._cast(parts)}
        module = prefix.split(".", 3)[3]
        activation = self.calibration.scale(layer, ACTIVATION_OF[module])
        return {f"{prefix}.weight": [quantize_fp8(p, scale_of) for p in parts],
                f"{prefix}.weights_scaling_factor": [torch.tensor([scale_of])] * len(parts),
                f"{prefix}.activation_scaling_factor": [torch.tensor([activation])] * len(parts)}

    def convert(self, megatron: str, full: torch.Tensor) -> dict[str, list[torch.Tensor]]:
        tp = self.options.tp
        if megatron == EMBEDDING:
            out = {"transformer.vocab_embedding.weight": self._replicated(full)}
            if self.arch.tie_word_embeddings:
                out["lm_head.weight"] = self._cast(lm_head_rank_weights(full, tp))
            return out
        if megatron == FINAL_NORM:
            return {"transformer.ln_f.weight": self._replicated(full)}
        if megatron == OUTPUT:
            return {"lm_head.weight": self._cast(lm_head_rank_weights(full, tp))}
        layer_text, suffix = megatron.removeprefix("decoder.layers.").split(".", 1)
        layer = int(layer_text)
        t = f"transformer.layers.{layer}."
        fp8 = self.options.fp8
        if suffix.endswith("layer_norm_weight"):
            name = "input_layernorm" if suffix.startswith("self_attention") else "post_layernorm"
            return {f"{t}{name}.weight": self._replicated(full)}
        if suffix == "self_attention.linear_qkv.weight":
            from nemo_exaone.checkpoint.mapping import GroupedQKV

            q, k, v = GroupedQKV(megatron, "q", "k", "v").from_megatron(full, self.dims)
            parts = qkv_rank_weights(q, k, v, self.arch.num_key_value_heads, tp)
            out = self._linear(f"{t}attention.qkv", layer, parts,
                               weight_scale(full) if fp8 else None)
            if self.options.fp8_kv_cache:
                amax = max(self.calibration.amax[layer]["k"], self.calibration.amax[layer]["v"])
                out[f"{t}attention.kv_cache_scaling_factor"] = \
                    [torch.tensor([max(amax, MIN_AMAX) / E4M3_MAX])] * tp
            return out
        if suffix == "self_attention.linear_proj.weight":
            return self._linear(f"{t}attention.dense", layer, split_cols(full, tp),
                                weight_scale(full) if fp8 else None)
        if suffix == "mlp.linear_fc1.weight":
            gate_proj, up_proj = full.chunk(2, dim=0)  # Megatron fc1 = [gate; up]
            scale = weight_scale(full) if fp8 else None  # fc and gate fuse: one scale
            out = self._linear(f"{t}mlp.fc", layer, split_rows(gate_proj, tp), scale)
            out.update(self._linear(f"{t}mlp.gate", layer, split_rows(up_proj, tp), scale))
            return out
        if suffix == "mlp.linear_fc2.weight":
            return self._linear(f"{t}mlp.proj", layer, split_cols(full, tp),
                                weight_scale(full) if fp8 else None)
        raise CheckpointError(f"Megatron parameter {megatron!r} has no TensorRT-LLM mapping")


def verify_trtllm_checkpoint(directory: Path, tp: int) -> None:
    """Before publishing: config.json parses and every rank file is complete."""
    from nemo_exaone.checkpoint.safetensors_io import read_header

    json.loads((directory / "config.json").read_text())
    for rank in range(tp):
        path = directory / f"rank{rank}.safetensors"
        if not path.is_file():
            raise CheckpointError(f"{path} was not written")
        read_header(path)  # raises on a truncated file, naming the tensor


def export_trtllm(
    ckpt_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    options: TrtllmOptions = TrtllmOptions(),
    calib_data: str | os.PathLike | None = None,
    calib_samples: int = 64,
    calib_seq_len: int = 256,
    calib_precision: str = "fp32",
    tokenizer_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: bool | None = None,
    calibration: Calibration | None = None,
) -> ConversionReport:
    """Write a TensorRT-LLM checkpoint of Megatron checkpoint ``ckpt_dir`` (a converted or
    trained checkpoint directory) to ``out_dir``, one Megatron parameter in memory at a time.

    FP8 first calibrates (``calibration`` may be passed precomputed) with the checkpoint's
    tokenizer (or ``tokenizer_dir``) over ``calib_samples`` texts of ``calib_data`` (JSONL with
    a ``text`` field; default the shipped corpus), each cut to ``calib_seq_len`` tokens, with
    the model in ``calib_precision`` ("fp32"; "bf16" halves the memory of a large model).
    """
    from nemo_exaone.checkpoint.dcp_io import DistCheckpointReader
    from nemo_exaone.checkpoint.exaone4_hf import hf_table
    from nemo_exaone.checkpoint.locate import locate_checkpoint
    from nemo_exaone.checkpoint.mcore_layout import check_layout_covers, megatron_layout
    from nemo_exaone.checkpoint.mcore_to_hf import check_stored_shapes, read_param
    from nemo_exaone.checkpoint.metadata import read_checkpoint_arch
    from nemo_exaone.checkpoint.progress import byte_progress
    from nemo_exaone.runtime.outputs import atomic_directory, check_output, refuse_overlap

    start = time.perf_counter()
    found = locate_checkpoint(ckpt_dir)  # a run directory, its checkpoints/, or iter_N
    ckpt_dir, out_dir = Path(found.path).absolute(), Path(out_dir).absolute()
    inputs, flags = [ckpt_dir, calib_data, tokenizer_dir], ["--ckpt", "--calib-data",
                                                           "--tokenizer"]
    refuse_overlap(out_dir, inputs, output_flag="--out", input_flags=flags)
    check_output(out_dir, overwrite, flag="--out")
    arch = read_checkpoint_arch(ckpt_dir)
    check_exportable(arch, options)
    details = [f"TensorRT-LLM engine-flow checkpoint: tp={options.tp}, dtype={options.dtype}"
               + (", FP8 weights/activations" if options.fp8 else "")
               + (", FP8 KV cache (scales from calibrated k/v amax)"
                  if options.fp8_kv_cache else ""), found.note]
    if arch.num_key_value_heads < options.tp:
        details.append(f"KV heads duplicated: {arch.num_key_value_heads} -> {options.tp}")
    if padded_vocab(arch.vocab_size, options.tp) != arch.vocab_size:
        details.append(f"lm_head padded: {arch.vocab_size} -> "
                       f"{padded_vocab(arch.vocab_size, options.tp)} rows")
    if options.fp8 and calibration is None:
        from nemo_exaone.export.fp8_calibration import calibrate_checkpoint
        from nemo_exaone.inference.loading import load_tokenizer_for

        tokenizer = load_tokenizer_for(ckpt_dir, tokenizer_dir)
        if tokenizer is None:
            raise InputError(f"{ckpt_dir} carries no tokenizer and FP8 calibration needs one: "
                             "pass --tokenizer DIR")
        calibration = calibrate_checkpoint(ckpt_dir, arch, tokenizer, calib_data=calib_data,
                                           samples=calib_samples, seq_len=calib_seq_len,
                                           precision=calib_precision)
    if calibration is not None:
        if len(calibration.amax) != arch.num_layers:
            raise InputError(f"calibration covers {len(calibration.amax)} layers, the model "
                             f"has {arch.num_layers}")
        details += calibration.notes
    table = hf_table(arch)
    layout = megatron_layout(arch, table)
    groups = plan_groups(arch, options)
    check_layout_covers(layout, [megatron for megatron, _ in groups])
    params = layout.params()
    reader = DistCheckpointReader(ckpt_dir)
    check_stored_shapes(reader, layout.chunks, arch, ckpt_dir)
    entries = [e for _, group in groups for e in group]
    total = sum(e.nbytes for e in entries) * options.tp
    converter = _Converter(arch, options, calibration)
    bar = byte_progress(total, "export trtllm", progress)
    read = 0
    try:
        with atomic_directory(out_dir, overwrite=overwrite, inputs=inputs, input_flags=flags,
                              flag="--out",
                              verify=lambda tmp: verify_trtllm_checkpoint(tmp, options.tp)) as tmp:
            (tmp / "config.json").write_text(
                json.dumps(trtllm_config(arch, options), indent=2) + "\n")
            writers = [SafetensorsStreamWriter(tmp / f"rank{r}.safetensors", entries)
                       for r in range(options.tp)]
            try:
                for megatron, group in groups:
                    full = read_param(reader, params[megatron])
                    read += full.numel() * full.element_size()
                    if not bool(torch.isfinite(full).all()):
                        raise CheckpointError(f"tensor {megatron!r} in {ckpt_dir} holds NaN/Inf")
                    produced = converter.convert(megatron, full)
                    for entry in group:
                        if entry.name not in produced:
                            raise CheckpointError(f"{megatron!r} did not produce {entry.name}")
                        for writer, tensor in zip(writers, produced[entry.name]):
                            writer.write(entry.name, tensor)
                            bar.update(entry.nbytes)
                    del full, produced
                for writer in writers:
                    writer.close()  # raises, naming the file, if a tensor is missing
            except BaseException:
                for writer in writers:  # the temporary directory is removed; free the handles
                    with contextlib.suppress(RuntimeError, OSError):
                        writer.close()
                raise
    finally:
        bar.close()
    return ConversionReport("mcore-to-trtllm", str(ckpt_dir), str(out_dir), len(entries), read,
                            total, time.perf_counter() - start, details)
