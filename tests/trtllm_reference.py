"""An independent reader of TensorRT-LLM engine-flow checkpoints (LLaMA class), with a forward pass.

Written from TensorRT-LLM's documented semantics only (``docs/source/architecture/
checkpoint.md``, ``models/llama/{convert,config}.py``, ``layers/mlp.py`` GatedMLP,
``quantization/layers.py`` FP8Linear), never from ``nemo_exaone.export``: it reads
``config.json`` and every ``rank{r}.safetensors``, merges the ranks (column-parallel weights
on dim 0, row-parallel ones on dim 1), un-fuses each rank's ``[q; k; v]``, removes duplicated
KV heads (checking the copies agree) and the ``lm_head`` vocabulary padding, and runs a Llama
forward in plain fp32 torch:

    h = embed[tokens]; per layer: x = rms(h) * input_layernorm
    q, k, v = x @ W^T, RoPE (GPT-NeoX halves; llama3 frequency scaling from rotary_scaling)
    h += dense(causal GQA attention)
    x = rms(h) * post_layernorm; h += proj(silu(fc(x)) * gate(x))
    logits = (rms(h) * ln_f) @ lm_head^T

FP8 (``quant_algo == "FP8"``): a quantized linear computes ``dq(x) @ dq(W)^T`` with
``dq(W) = W_fp8 * weights_scaling_factor`` and ``dq(x) = fp8(x / activation_scaling_factor) *
activation_scaling_factor`` (saturating at 448); with an FP8 KV cache the post-RoPE keys and the
values are fake-quantized by ``kv_cache_scaling_factor`` the same way.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file

E4M3 = 448.0
COLUMN = ("attention.qkv", "mlp.fc", "mlp.gate")  # split on the output dim
ROW = ("attention.dense", "mlp.proj")  # split on the input dim


def fake_quant(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return (x / scale).clamp(-E4M3, E4M3).to(torch.float8_e4m3fn).float() * scale


@dataclass
class Linear:
    weight: torch.Tensor  # fp32, dequantized
    act_scale: torch.Tensor | None = None  # per-tensor input scale (FP8 only)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.act_scale is not None:
            x = fake_quant(x, self.act_scale)
        return x @ self.weight.T


@dataclass
class Layer:
    input_norm: torch.Tensor
    post_norm: torch.Tensor
    q: Linear
    k: Linear
    v: Linear
    dense: Linear
    fc: Linear
    gate: Linear
    proj: Linear
    kv_scale: torch.Tensor | None = None


@dataclass
class ReferenceModel:
    config: dict
    embedding: torch.Tensor
    layers: list[Layer]
    final_norm: torch.Tensor
    lm_head: torch.Tensor
    notes: list[str] = field(default_factory=list)


def _same_across_ranks(ranks: list[dict], name: str) -> torch.Tensor:
    first = ranks[0][name]
    for r, tensors in enumerate(ranks[1:], 1):
        if not torch.equal(tensors[name], first):
            raise AssertionError(f"{name} differs between rank 0 and rank {r}")
    return first.float()


def _dequantized(ranks: list[dict], prefix: str, fp8: bool) -> list[torch.Tensor]:
    """Each rank's weight of linear ``prefix`` in fp32 (dequantized under FP8)."""
    out = []
    for tensors in ranks:
        w = tensors[f"{prefix}.weight"]
        if fp8:
            assert w.dtype == torch.float8_e4m3fn, f"{prefix}.weight is {w.dtype}, not fp8"
            scale = tensors[f"{prefix}.weights_scaling_factor"]
            assert scale.dtype == torch.float32 and tuple(scale.shape) == (1,), prefix
            w = w.float() * scale
        out.append(w.float())
    return out


def _act_scale(ranks: list[dict], prefix: str, fp8: bool) -> torch.Tensor | None:
    return _same_across_ranks(ranks, f"{prefix}.activation_scaling_factor") if fp8 else None


def load(directory: str | Path) -> ReferenceModel:
    """Read and merge a TensorRT-LLM checkpoint directory."""
    directory = Path(directory)
    config = json.loads((directory / "config.json").read_text())
    mapping = config["mapping"]
    tp = mapping["tp_size"]
    assert mapping.get("pp_size", 1) == 1 and mapping["world_size"] == tp, mapping
    ranks = [load_file(str(directory / f"rank{r}.safetensors")) for r in range(tp)]
    quant = config.get("quantization") or {}
    fp8 = quant.get("quant_algo") == "FP8"
    fp8_kv = quant.get("kv_cache_quant_algo") == "FP8"
    excluded = quant.get("exclude_modules") or []
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    d = config.get("head_size") or config["hidden_size"] // heads
    kv_stored = max(kv_heads, tp)  # kv heads duplicated up to tp
    q_rank, kv_rank = heads // tp * d, kv_stored // tp * d
    layers = []
    for i in range(config["num_hidden_layers"]):
        t = f"transformer.layers.{i}."
        parts = _dequantized(ranks, t + "attention.qkv", fp8)
        qs, ks, vs = zip(*(p.split([q_rank, kv_rank, kv_rank], dim=0) for p in parts))
        q, k, v = torch.cat(qs), torch.cat(ks), torch.cat(vs)
        if kv_stored != kv_heads:  # keep one copy of each duplicated head, checking the rest
            reps = kv_stored // kv_heads
            k4, v4 = (x.reshape(kv_heads, reps, d, -1) for x in (k, v))
            assert torch.equal(k4, k4[:, :1].expand_as(k4)), f"layer {i}: K copies differ"
            assert torch.equal(v4, v4[:, :1].expand_as(v4)), f"layer {i}: V copies differ"
            k, v = k4[:, 0].reshape(kv_heads * d, -1), v4[:, 0].reshape(kv_heads * d, -1)
        qkv_act = _act_scale(ranks, t + "attention.qkv", fp8)
        linears = {}
        for name in ("attention.dense", "mlp.fc", "mlp.gate", "mlp.proj"):
            pieces = _dequantized(ranks, t + name, fp8)
            linears[name] = Linear(torch.cat(pieces, dim=0 if name in COLUMN else 1),
                                   _act_scale(ranks, t + name, fp8))
        layers.append(Layer(
            input_norm=_same_across_ranks(ranks, t + "input_layernorm.weight"),
            post_norm=_same_across_ranks(ranks, t + "post_layernorm.weight"),
            q=Linear(q, qkv_act), k=Linear(k, qkv_act), v=Linear(v, qkv_act),
            dense=linears["attention.dense"], fc=linears["mlp.fc"], gate=linears["mlp.gate"],
            proj=linears["mlp.proj"],
            kv_scale=(_same_across_ranks(ranks, t + "attention.kv_cache_scaling_factor")
                      if fp8_kv else None)))
    vocab = config["vocab_size"]
    lm_head = torch.cat([r["lm_head.weight"] for r in ranks]).float()
    assert "lm_head" in excluded or not fp8, "lm_head must be excluded from FP8 here"
    assert lm_head.shape[0] == math.ceil(vocab / tp) * tp, lm_head.shape
    assert not lm_head[vocab:].any(), "vocabulary padding rows are not zero"
    return ReferenceModel(
        config=config,
        embedding=_same_across_ranks(ranks, "transformer.vocab_embedding.weight"),
        layers=layers, final_norm=_same_across_ranks(ranks, "transformer.ln_f.weight"),
        lm_head=lm_head[:vocab])


def _rms(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def inverse_frequencies(config: dict, dim: int) -> torch.Tensor:
    base = float(config.get("rotary_base", 10000.0))
    inv = 1.0 / base ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    scaling = config.get("rotary_scaling")
    if scaling is None:
        return inv.float()
    kind = scaling.get("type", scaling.get("rope_type"))
    assert kind == "llama3", f"rotary_scaling type {kind!r} not implemented by the reader"
    factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
    old = scaling["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv
    scaled = torch.where(wavelen > old / low, inv / factor, inv)
    smooth = (old / wavelen - low) / (high - low)
    mixed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= old / high) & (wavelen <= old / low)
    return torch.where(medium, mixed, scaled).float()


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


def forward(model: ReferenceModel, tokens: torch.Tensor,
            observe: Callable[[int, str, torch.Tensor], None] | None = None) -> torch.Tensor:
    """fp32 logits [batch, seq, vocab] of ``tokens`` [batch, seq]. ``observe(layer, what, x)``
    sees each linear's input (``qkv``, ``dense``, ``fc``, ``proj``) and the cached ``k``
    (post-RoPE) and ``v``, before any quantization."""
    def seen(i: int, what: str, x: torch.Tensor) -> torch.Tensor:
        if observe is not None:
            observe(i, what, x)
        return x

    c = model.config
    heads, kv_heads = c["num_attention_heads"], c["num_key_value_heads"]
    d = c.get("head_size") or c["hidden_size"] // heads
    eps = c["norm_epsilon"]
    assert c["hidden_act"] == "silu" and c["position_embedding_type"] == "rope_gpt_neox"
    b, s = tokens.shape
    angles = torch.arange(s, dtype=torch.float32)[:, None] * inverse_frequencies(c, d)[None]
    cos, sin = (torch.cat([f(angles)] * 2, dim=-1) for f in (torch.cos, torch.sin))
    causal = torch.ones(s, s, dtype=torch.bool).tril()
    h = model.embedding[tokens]
    for i, layer in enumerate(model.layers):
        x = seen(i, "qkv", _rms(h, layer.input_norm, eps))
        q = layer.q(x).view(b, s, heads, d).transpose(1, 2)
        k = layer.k(x).view(b, s, kv_heads, d).transpose(1, 2)
        v = layer.v(x).view(b, s, kv_heads, d).transpose(1, 2)
        q, k = _rope(q, cos, sin), seen(i, "k", _rope(k, cos, sin))
        seen(i, "v", v)
        if layer.kv_scale is not None:
            k, v = fake_quant(k, layer.kv_scale), fake_quant(v, layer.kv_scale)
        k = k.repeat_interleave(heads // kv_heads, dim=1)
        v = v.repeat_interleave(heads // kv_heads, dim=1)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(d)
        scores = scores.masked_fill(~causal, float("-inf"))
        context = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, s, heads * d)
        h = h + layer.dense(seen(i, "dense", context))
        x = seen(i, "fc", _rms(h, layer.post_norm, eps))
        h = h + layer.proj(seen(i, "proj", torch.nn.functional.silu(layer.fc(x)) * layer.gate(x)))
    return _rms(h, model.final_norm, eps) @ model.lm_head.T
