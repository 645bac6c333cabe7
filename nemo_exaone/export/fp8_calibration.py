"""FP8 calibration for the TensorRT-LLM export: activation ranges from a forward pass of our model.

TensorRT-LLM's per-tensor FP8 (``quant_algo: "FP8"``) needs, for every quantized linear, the
largest absolute value its *input* takes (``activation_scaling_factor`` = amax / 448, the E4M3
maximum) and, for an FP8 KV cache, the range of the cached keys and values. They are measured
here by running the Megatron model itself (TP=1, local layer spec, so each linear's input is
what the engine's linear sees: the normed hidden state, the attention context, the SwiGLU
product) over sample text encoded with the checkpoint's tokenizer. No ``nvidia-modelopt``
needed: it is never imported.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from nemo_exaone.config.errors import InputError
from nemo_exaone.data.jsonl import require_file

E4M3_MAX = 448.0
# The amax is clamped from below so that an all-zero tensor still gets a usable (tiny) scale.
MIN_AMAX = 1e-6
DEFAULT_CALIB_DATA = Path(__file__).resolve().parents[1] / "assets" / "data" / "corpus.jsonl"
# Per layer: the input ranges of the four linears and the post-RoPE key / value ranges.
ACTIVATION_KEYS: tuple[str, ...] = ("qkv", "dense", "fc", "proj", "k", "v")


@dataclass
class Calibration:
    """Measured absolute maxima, one dict per layer (keys: :data:`ACTIVATION_KEYS`)."""

    amax: list[dict[str, float]]
    samples: int
    tokens: int
    source: str
    notes: list[str] = field(default_factory=list)

    def scale(self, layer: int, key: str) -> float:
        """The dequantization multiplier (amax / 448) TensorRT-LLM stores."""
        return max(self.amax[layer][key], MIN_AMAX) / E4M3_MAX


def load_calibration_texts(path: str | os.PathLike | None, samples: int) -> tuple[list[str], str]:
    """The first ``samples`` non-empty ``text`` values of a JSONL file (default: the corpus
    shipped in ``nemo_exaone/assets``) and the path read. Bad lines are errors naming
    file:line."""
    if samples <= 0:
        raise InputError(f"--calib-samples {samples}: must be positive")
    source = Path(path) if path is not None else DEFAULT_CALIB_DATA
    try:
        require_file(source, "--calib-data")
    except FileNotFoundError as exc:
        raise InputError(str(exc)) from None
    texts: list[str] = []
    with source.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{source}:{number}: not valid JSON ({exc.msg})") from exc
            text = record.get("text") if isinstance(record, dict) else None
            if not isinstance(text, str):
                raise InputError(f"{source}:{number}: a calibration record needs a string "
                                 "'text' field")
            if text.strip():
                texts.append(text)
            if len(texts) == samples:
                break
    if not texts:
        raise InputError(f"--calib-data {source}: no non-empty 'text' records")
    return texts, str(source)


def _amax(tensor: torch.Tensor) -> float:
    low, high = torch.aminmax(tensor.detach())
    return float(torch.maximum(-low, high).float())


def calibrate(model: torch.nn.Module, token_rows: list[list[int]], source: str) -> Calibration:
    """Run ``model`` (a TP=1, PP=1 ``GPTModel`` built with the local layer spec) over each row
    of token ids and record the ranges TensorRT-LLM's FP8 scales need."""
    layers = list(model.decoder.layers)
    for index, layer in enumerate(layers):
        if type(layer.input_layernorm).__name__ == "IdentityOp":
            raise RuntimeError(f"decoder layer {index}: the norm is fused into linear_qkv "
                               "(Transformer Engine spec); calibration needs the local spec, "
                               "whose linear inputs are the normed activations")
    amax = [dict.fromkeys(ACTIVATION_KEYS, 0.0) for _ in layers]
    hooks = []

    def record(layer: int, key: str, tensor: torch.Tensor) -> None:
        amax[layer][key] = max(amax[layer][key], _amax(tensor))

    for index, layer in enumerate(layers):
        attention, mlp = layer.self_attention, layer.mlp
        for module, key in ((attention.linear_qkv, "qkv"), (attention.linear_proj, "dense"),
                            (mlp.linear_fc1, "fc"), (mlp.linear_fc2, "proj")):
            hooks.append(module.register_forward_pre_hook(
                lambda _m, args, i=index, k=key: record(i, k, args[0])))

        def kv_hook(_m, args, kwargs, i=index):
            key = args[1] if len(args) > 1 else kwargs["key"]
            value = args[2] if len(args) > 2 else kwargs["value"]
            record(i, "k", key)
            record(i, "v", value)

        hooks.append(attention.core_attention.register_forward_pre_hook(kv_hook, with_kwargs=True))
    tokens = 0
    try:
        model.eval()
        with torch.no_grad():
            for row in token_rows:
                ids = torch.tensor([row], dtype=torch.long)
                positions = torch.arange(len(row)).unsqueeze(0)
                model(ids, positions, None)
                tokens += len(row)
    finally:
        for hook in hooks:
            hook.remove()
    for index, ranges in enumerate(amax):
        bad = [key for key, value in ranges.items() if not math.isfinite(value)]
        if bad:
            raise RuntimeError(f"calibration: decoder layer {index} gives non-finite "
                               f"{', '.join(bad)} activations; the checkpoint's weights are "
                               "damaged or overflow in this precision")
    return Calibration(amax=amax, samples=len(token_rows), tokens=tokens, source=source)


def encode_texts(tokenizer, texts: list[str], seq_len: int) -> list[list[int]]:
    """Token rows of at most ``seq_len`` ids (longer texts truncated; empty ones dropped)."""
    if seq_len <= 0:
        raise InputError(f"--calib-seq-len {seq_len}: must be positive")
    rows = [ids[:seq_len] for ids in tokenizer.encode_batch(texts)]
    rows = [row for row in rows if row]
    if not rows:
        raise InputError("the calibration texts encode to no tokens")
    return rows


def calibrate_checkpoint(ckpt_dir: str | os.PathLike, arch, tokenizer, *,
                         calib_data: str | os.PathLike | None, samples: int, seq_len: int,
                         precision: str = "fp32") -> Calibration:
    """Load checkpoint ``ckpt_dir`` into a single-process TP=1 model and calibrate it."""
    from nemo_exaone.checkpoint.mcore_checkpoint import load_mcore_checkpoint
    from nemo_exaone.checkpoint.mcore_layout import single_process_megatron
    from nemo_exaone.config.parallel import PrecisionConfig
    from nemo_exaone.model.builder import ModelOptions, build_model

    texts, source = load_calibration_texts(calib_data, samples)
    rows = encode_texts(tokenizer, texts, seq_len)
    too_big = [max(row) for row in rows if max(row) >= arch.vocab_size]
    if too_big:
        raise InputError(f"the tokenizer gives id {max(too_big)}, outside the model's vocabulary "
                         f"({arch.vocab_size}): the checkpoint and the tokenizer do not match")
    with single_process_megatron():
        model = build_model(arch, precision=PrecisionConfig(dtype=precision),
                            options=ModelOptions(spec="local"), perform_initialization=False)
        load_mcore_checkpoint([model], ckpt_dir, arch)
        result = calibrate(model, rows, source)
        del model
    result.notes.append(f"FP8 calibration: {result.samples} samples, {result.tokens} tokens "
                        f"from {source} (at most {seq_len} tokens each), model in {precision}")
    return result
