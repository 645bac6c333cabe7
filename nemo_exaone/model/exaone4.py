"""EXAONE 4.0 decoder layers on Megatron-Core: post-norm, per-head QK-norm, hybrid attention.

What ``Exaone4DecoderLayer`` computes, and which Megatron-Core piece does it:

* QK-norm: RMSNorm over each head's query and key before RoPE -> Megatron's own
  ``qk_layernorm`` (``q_layernorm``/``k_layernorm`` in the spec; their gradients are summed
  over the tensor-parallel group by Megatron's ``finalize_model_grads``).
* Sliding-window layers: ``window_size=(sliding_window - 1, 0)`` with a per-layer
  ``window_attn_skip_freq`` list (1 = windowed); transformers lets query ``q`` see keys
  ``q - sliding_window < k <= q``, i.e. ``sliding_window - 1`` keys to the left. On the TE spec
  Transformer Engine applies the window; on the local spec :class:`WindowedSDPACoreAttention`
  adds the band to the causal mask.
* No RoPE on the global layers of a hybrid model -> Megatron's per-layer ``no_rope_freq``.
* Post-norm (RMSNorm on the attention / MLP output before the residual add, no pre-norm):
  Megatron has no option for it, so the output projections (``linear_proj``, ``linear_fc2``)
  are row-parallel linears followed by an RMSNorm (:func:`post_norm_linear`), whose weight is
  ``<linear>.post_layernorm.weight``; the pre-norms are identities.
"""

from __future__ import annotations

import functools

import torch

from nemo_exaone.config.exaone4_config import SLIDING, rope_layers
from nemo_exaone.config.presets import ExaoneArch
from nemo_exaone.model.attention import SDPACoreAttention


def exaone4_config_kwargs(arch: ExaoneArch) -> dict:
    """``TransformerConfig`` fields that make Megatron's layers EXAONE 4.0 layers."""
    kinds = tuple(arch.layer_types or ())
    out: dict = {"qk_layernorm": True}
    if arch.sliding_window is not None and SLIDING in kinds:
        out["window_size"] = (int(arch.sliding_window) - 1, 0)
        out["window_attn_skip_freq"] = [int(kind == SLIDING) for kind in kinds]
    rope = rope_layers(arch.sliding_window, kinds)
    if not all(rope):
        out["no_rope_freq"] = [int(not r) for r in rope]
    return out


class WindowedSDPACoreAttention(SDPACoreAttention):
    """:class:`SDPACoreAttention` that honours ``config.window_size`` on the layers
    ``window_attn_skip_freq`` marks, through a banded causal mask."""

    def __init__(self, config, layer_number: int, *args, **kwargs) -> None:
        super().__init__(config, layer_number, *args, **kwargs)
        from megatron.core.transformer.utils import is_layer_window_attention

        self.window = None
        if is_layer_window_attention(config.window_size, config.window_attn_skip_freq,
                                     layer_number):
            self.window = tuple(int(w) for w in config.window_size)

    def forward(self, query, key, value, attention_mask, attn_mask_type=None,
                attention_bias=None, packed_seq_params=None):
        if self.window is not None:
            from megatron.core.transformer.enums import AttnMaskType

            mask_type = attn_mask_type or self.attn_mask_type
            sq, sk = query.shape[0], key.shape[0]
            q = torch.arange(sk - sq, sk, device=query.device).unsqueeze(1)
            k = torch.arange(sk, device=query.device).unsqueeze(0)
            left, right = self.window
            masked = torch.zeros(sq, sk, dtype=torch.bool, device=query.device)
            if mask_type == AttnMaskType.causal or attention_mask is None:
                masked |= k > q
            if left >= 0:
                masked |= k < q - left
            if right >= 0:
                masked |= k > q + right
            masked = masked.view(1, 1, sq, sk)
            attention_mask = masked if attention_mask is None else attention_mask | masked
        return super().forward(query, key, value, attention_mask, attn_mask_type,
                               attention_bias, packed_seq_params)


@functools.cache
def post_norm_linear(linear_cls: type, norm_cls: type) -> type:
    """``linear_cls`` (a row-parallel linear returning ``(output, bias)``) followed by
    ``norm_cls`` over its full (reduced) output: EXAONE 4.0's post-attention / post-MLP norm.

    The norm sees the row-parallel output after its all-reduce (or, with sequence
    parallelism, its reduce-scatter over the sequence): whole hidden vectors either way.
    """

    class PostNormLinear(linear_cls):
        def __init__(self, input_size: int, output_size: int, *args, config, **kwargs) -> None:
            super().__init__(input_size, output_size, *args, config=config, **kwargs)
            self.post_layernorm = norm_cls(config=config, hidden_size=output_size,
                                           eps=config.layernorm_epsilon)

        def forward(self, *args, **kwargs):
            output, bias = super().forward(*args, **kwargs)
            if bias is not None:  # EXAONE has no biases; the norm must follow the bias add
                output, bias = output + bias, None
            return self.post_layernorm(output), bias

    PostNormLinear.__name__ = PostNormLinear.__qualname__ = f"PostNorm{linear_cls.__name__}"
    return PostNormLinear


def exaone4_layer_spec(name: str):
    """Megatron ``ModuleSpec`` of one EXAONE 4.0 decoder layer (``name``: "local" or "te")."""
    from megatron.core.transformer.identity_op import IdentityOp

    if name == "te":
        from megatron.core.extensions.transformer_engine import (
            TEColumnParallelLinear,
            TENorm,
            TERowParallelLinear,
        )
        from megatron.core.models.gpt.gpt_layer_specs import (
            get_gpt_layer_with_transformer_engine_spec,
        )

        spec = get_gpt_layer_with_transformer_engine_spec(qk_layernorm=True)
        column, row, norm = TEColumnParallelLinear, TERowParallelLinear, TENorm
        attention = spec.submodules.self_attention.submodules.core_attention
    elif name == "local":
        from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
        from megatron.core.tensor_parallel.layers import ColumnParallelLinear, RowParallelLinear

        from nemo_exaone.model.norm import ExaoneRMSNorm

        spec = get_gpt_layer_local_spec(normalization="RMSNorm", qk_layernorm=True)
        column, row, norm = ColumnParallelLinear, RowParallelLinear, ExaoneRMSNorm
        attention = WindowedSDPACoreAttention
    else:
        raise ValueError(f"layer spec {name!r}: choose 'te' or 'local'")
    attn = spec.submodules.self_attention.submodules
    attn.linear_qkv = column  # no fused pre-norm: EXAONE 4.0 has none
    attn.core_attention = attention
    attn.q_layernorm = norm
    attn.k_layernorm = norm
    attn.linear_proj = post_norm_linear(row, norm)
    # megatron-core 0.16: a ModuleSpec; 0.19: functools.partial(MLP.as_mlp_submodule,
    # submodules=...). The submodules object is mutable in both.
    mlp_spec = spec.submodules.mlp
    mlp = mlp_spec.keywords["submodules"] if isinstance(mlp_spec, functools.partial) \
        else mlp_spec.submodules
    mlp.linear_fc1 = column
    mlp.linear_fc2 = post_norm_linear(row, norm)
    spec.submodules.input_layernorm = IdentityOp
    spec.submodules.pre_mlp_layernorm = IdentityOp
    # The local spec renames its (now absent) pre-norms for checkpoints; nothing to rename.
    spec.submodules.sharded_state_dict_keys_map = {}
    return spec


def exaone4_block_spec(config, name: str | None = None, vp_stage: int | None = None):
    """Block spec of this pipeline stage's EXAONE 4.0 layers and the final norm (EXAONE 4.0
    keeps a final RMSNorm before the output layer)."""
    from megatron.core.transformer.transformer_block import (
        TransformerBlockSubmodules,
        get_num_layers_to_build,
    )

    from nemo_exaone.model.spec import default_spec_name

    name = name or default_spec_name()
    layer = exaone4_layer_spec(name)
    if name == "te":
        from megatron.core.extensions.transformer_engine import TENorm as final_norm
    else:
        from nemo_exaone.model.norm import ExaoneRMSNorm as final_norm
    num_layers = get_num_layers_to_build(config, vp_stage=vp_stage)
    return TransformerBlockSubmodules(layer_specs=[layer] * num_layers, layer_norm=final_norm)
