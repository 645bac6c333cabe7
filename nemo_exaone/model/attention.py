"""Core attention for the local (non-Transformer-Engine) spec on PyTorch's fused SDPA.

Megatron-Core's ``DotProductAttention`` materialises the [b, heads, sq, sk] score matrix with
explicit bmm + masked softmax. ``torch.nn.functional.scaled_dot_product_attention`` computes
the same function with fused kernels (flash / memory-efficient on GPU, a fused CPU kernel
otherwise), which is faster and lighter. Same inputs and outputs as Megatron's class.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from megatron.core.transformer.enums import AttnMaskType
from megatron.core.transformer.module import MegatronModule


class SDPACoreAttention(MegatronModule):
    def __init__(self, config, layer_number: int, attn_mask_type: AttnMaskType,
                 attention_type: str, attention_dropout: float | None = None,
                 softmax_scale: float | None = None, cp_comm_type: str | None = None,
                 pg_collection=None, **_: object) -> None:
        super().__init__(config=config)
        if config.context_parallel_size > 1:
            raise ValueError("SDPACoreAttention has no context-parallel implementation; "
                             "context parallelism needs the Transformer Engine spec")
        self.attn_mask_type = attn_mask_type
        self.dropout_p = config.attention_dropout if attention_dropout is None \
            else attention_dropout
        self.softmax_scale = softmax_scale if softmax_scale is not None \
            else 1.0 / math.sqrt(config.kv_channels)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                attention_mask: torch.Tensor | None, attn_mask_type: AttnMaskType | None = None,
                attention_bias: torch.Tensor | None = None, packed_seq_params=None
                ) -> torch.Tensor:
        """query [sq, b, np, hn], key/value [sk, b, ng, hn] -> context [sq, b, np * hn]."""
        if packed_seq_params is not None or attention_bias is not None:
            raise ValueError("SDPACoreAttention supports neither packed_seq_params nor "
                             "attention_bias")
        sq, b, heads, dim = query.shape
        groups = key.shape[2]
        q, k, v = (t.permute(1, 2, 0, 3) for t in (query, key, value))  # [b, h, s, d]
        if groups != heads:  # GQA: each KV group serves heads/groups consecutive query heads
            k = k.repeat_interleave(heads // groups, dim=1)
            v = v.repeat_interleave(heads // groups, dim=1)
        mask_type = attn_mask_type or self.attn_mask_type
        causal = attention_mask is None and mask_type == AttnMaskType.causal
        # Megatron masks are True where attention is NOT allowed; SDPA's are the opposite.
        sdpa_mask = None if attention_mask is None else ~attention_mask
        context = F.scaled_dot_product_attention(
            q, k, v, attn_mask=sdpa_mask, is_causal=causal,
            dropout_p=self.dropout_p if self.training else 0.0, scale=self.softmax_scale)
        return context.permute(2, 0, 1, 3).reshape(sq, b, heads * dim)
