"""The EXAONE 4.0 Hugging Face layout (``Exaone4ForCausalLM``), declared as data, and the table
of layouts by ``model_type`` that the converters look up.

Differences from 3.x's table: transformers' native names (``model.layers.{i}...``), no pre-norms,
per-head ``q_norm``/``k_norm`` (Megatron's ``q_layernorm``/``k_layernorm``) and the post-norms
``post_attention_layernorm``/``post_feedforward_layernorm``, which the EXAONE 4.0 layer spec
keeps on the output projections (``linear_proj.post_layernorm``, ``linear_fc2.post_layernorm``;
see :mod:`nemo_exaone.model.exaone4`). The names are the same on the local and the TE spec.
"""

from __future__ import annotations

from nemo_exaone.checkpoint.exaone_hf import EMBEDDING, EXAONE_HF_TABLE
from nemo_exaone.checkpoint.mapping import Direct, GatedMLP, GroupedQKV, WeightTable
from nemo_exaone.config.presets import ExaoneArch

_L = "decoder.layers.{i}."
_H = "model.layers.{i}."

EXAONE4_HF_TABLE = WeightTable(
    name="exaone4-hf",
    mappings=(
        Direct(EMBEDDING, "model.embed_tokens.weight", ("vocab_size", "hidden_size")),
        GroupedQKV(_L + "self_attention.linear_qkv.weight",
                   q=_H + "self_attn.q_proj.weight", k=_H + "self_attn.k_proj.weight",
                   v=_H + "self_attn.v_proj.weight"),
        Direct(_L + "self_attention.q_layernorm.weight", _H + "self_attn.q_norm.weight",
               ("head_dim",)),
        Direct(_L + "self_attention.k_layernorm.weight", _H + "self_attn.k_norm.weight",
               ("head_dim",)),
        Direct(_L + "self_attention.linear_proj.weight", _H + "self_attn.o_proj.weight",
               ("hidden_size", "q_size")),
        Direct(_L + "self_attention.linear_proj.post_layernorm.weight",
               _H + "post_attention_layernorm.weight", ("hidden_size",)),
        GatedMLP(_L + "mlp.linear_fc1.weight", gate=_H + "mlp.gate_proj.weight",
                 up=_H + "mlp.up_proj.weight"),
        Direct(_L + "mlp.linear_fc2.weight", _H + "mlp.down_proj.weight",
               ("hidden_size", "intermediate_size")),
        Direct(_L + "mlp.linear_fc2.post_layernorm.weight",
               _H + "post_feedforward_layernorm.weight", ("hidden_size",)),
        Direct("decoder.final_layernorm.weight", "model.norm.weight", ("hidden_size",)),
        # Absent when tied (EXAONE 4.0 1.2B): the output layer is the embedding.
        Direct("output_layer.weight", "lm_head.weight", ("vocab_size", "hidden_size"),
               tied_to=EMBEDDING),
    ),
)

# model_type -> the HF weight layout of that family.
HF_TABLES: dict[str, WeightTable] = {"exaone": EXAONE_HF_TABLE, "exaone4": EXAONE4_HF_TABLE}


def hf_table(arch: ExaoneArch) -> WeightTable:
    """The HF weight table of ``arch``'s family (its ``model_type``)."""
    if arch.model_type not in HF_TABLES:
        raise ValueError(f"model_type={arch.model_type!r} has no HF weight table; known: "
                         f"{', '.join(HF_TABLES)}")
    return HF_TABLES[arch.model_type]
