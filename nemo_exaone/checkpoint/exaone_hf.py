"""The EXAONE 3.x Hugging Face layout (``ExaoneForCausalLM``): the one table both directions use.

EXAONE 3.x is Llama with other names; a Llama-HF or TRT-LLM export is another
:class:`~nemo_exaone.checkpoint.mapping.WeightTable` over the same Megatron names.
"""

from __future__ import annotations

from nemo_exaone.checkpoint.mapping import Direct, GatedMLP, GroupedQKV, ModelDims, WeightTable
from nemo_exaone.config.presets import ExaoneArch

EMBEDDING = "embedding.word_embeddings.weight"

EXAONE_HF_TABLE = WeightTable(
    name="exaone-hf",
    mappings=(
        Direct(EMBEDDING, "transformer.wte.weight", ("vocab_size", "hidden_size")),
        Direct("decoder.layers.{i}.self_attention.linear_qkv.layer_norm_weight",
               "transformer.h.{i}.ln_1.weight", ("hidden_size",)),
        GroupedQKV("decoder.layers.{i}.self_attention.linear_qkv.weight",
                   q="transformer.h.{i}.attn.attention.q_proj.weight",
                   k="transformer.h.{i}.attn.attention.k_proj.weight",
                   v="transformer.h.{i}.attn.attention.v_proj.weight"),
        Direct("decoder.layers.{i}.self_attention.linear_proj.weight",
               "transformer.h.{i}.attn.attention.out_proj.weight", ("hidden_size", "q_size")),
        Direct("decoder.layers.{i}.mlp.linear_fc1.layer_norm_weight",
               "transformer.h.{i}.ln_2.weight", ("hidden_size",)),
        GatedMLP("decoder.layers.{i}.mlp.linear_fc1.weight",
                 gate="transformer.h.{i}.mlp.c_fc_0.weight",
                 up="transformer.h.{i}.mlp.c_fc_1.weight"),
        Direct("decoder.layers.{i}.mlp.linear_fc2.weight",
               "transformer.h.{i}.mlp.c_proj.weight", ("hidden_size", "intermediate_size")),
        Direct("decoder.final_layernorm.weight", "transformer.ln_f.weight", ("hidden_size",)),
        # Absent in tied checkpoints (EXAONE 3.5 2.4B): the output layer is the embedding.
        Direct("output_layer.weight", "lm_head.weight", ("vocab_size", "hidden_size"),
               tied_to=EMBEDDING),
    ),
    # Megatron's local layer spec keeps the norms as separate modules; its
    # sharded_state_dict_keys_map renames them to these same fused (TE) names.
    megatron_aliases={
        "input_layernorm.weight": "self_attention.linear_qkv.layer_norm_weight",
        "pre_mlp_layernorm.weight": "mlp.linear_fc1.layer_norm_weight",
    },
)

# Files copied next to the weights on export when the source HF directory has them.
TOKENIZER_FILES: tuple[str, ...] = (
    "tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt",
    "special_tokens_map.json", "generation_config.json",
)


def exaone_dims(arch: ExaoneArch) -> ModelDims:
    return ModelDims(
        num_layers=arch.num_layers, hidden_size=arch.hidden_size,
        num_attention_heads=arch.num_attention_heads,
        num_query_groups=arch.num_key_value_heads, head_dim=int(arch.head_dim),
        intermediate_size=arch.intermediate_size, vocab_size=arch.vocab_size,
        tie_word_embeddings=bool(arch.tie_word_embeddings))
