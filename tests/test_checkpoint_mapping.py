"""The EXAONE HF <-> Megatron weight table: names, shapes and the fused layouts, every preset."""

from __future__ import annotations

import pytest
import torch

from nemo_exaone.checkpoint.exaone_hf import EXAONE_HF_TABLE, exaone_dims
from nemo_exaone.checkpoint.mapping import GatedMLP, GroupedQKV
from nemo_exaone.config.presets import PRESET_NAMES, get_preset

# Shapes as published in the EXAONE HF checkpoints (q, k, c_fc_0, out_proj).
PUBLISHED = {
    "exaone3.0-7.8b": ((4096, 4096), (1024, 4096), (14336, 4096), (4096, 4096)),
    "exaone3.5-2.4b": ((2560, 2560), (640, 2560), (7168, 2560), (2560, 2560)),
    "exaone3.5-7.8b": ((4096, 4096), (1024, 4096), (14336, 4096), (4096, 4096)),
    "exaone3.5-32b": ((5120, 5120), (1024, 5120), (27392, 5120), (5120, 5120)),
}


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_table_binds_every_preset(preset):
    arch = get_preset(preset)
    bound = EXAONE_HF_TABLE.bind(exaone_dims(arch))
    targets = [t for b in bound for t in b.targets]
    assert len(targets) == len(set(targets))
    per_layer = 9  # ln_1, q, k, v, out_proj, ln_2, c_fc_0, c_fc_1, c_proj
    assert len(targets) == 2 + arch.num_layers * per_layer + (0 if arch.tie_word_embeddings else 1)
    assert ("lm_head.weight" in targets) == (not arch.tie_word_embeddings)
    assert targets[0] == "transformer.wte.weight"
    assert targets[-1] == ("transformer.ln_f.weight" if arch.tie_word_embeddings
                           else "lm_head.weight")
    shapes = {t: s for b in bound for t, s in zip(b.targets, b.target_shapes)}
    if preset in PUBLISHED:
        q, k, fc, out = PUBLISHED[preset]
        last = arch.num_layers - 1
        assert shapes[f"transformer.h.{last}.attn.attention.q_proj.weight"] == q
        assert shapes[f"transformer.h.{last}.attn.attention.k_proj.weight"] == k
        assert shapes[f"transformer.h.{last}.mlp.c_fc_0.weight"] == fc
        assert shapes[f"transformer.h.{last}.attn.attention.out_proj.weight"] == out
        assert shapes["transformer.wte.weight"] == (102400, arch.hidden_size)


def test_grouped_qkv_layout_and_inverse():
    dims = exaone_dims(get_preset("tiny").replace(head_dim=8))  # 4 heads, 2 groups
    mapping = GroupedQKV("m", q="q", k="k", v="v")
    d, width = dims.head_dim, dims.hidden_size
    q = torch.arange(dims.q_size * width, dtype=torch.float32).reshape(dims.q_size, width)
    k = -torch.arange(dims.kv_size * width, dtype=torch.float32).reshape(dims.kv_size, width)
    v = k - 1e6
    fused = mapping.to_megatron([q, k, v], dims)
    assert fused.shape == (dims.q_size + 2 * dims.kv_size, width)
    per = dims.heads_per_group
    for g in range(dims.num_query_groups):  # Megatron: per group [its q heads; k_g; v_g]
        block = fused[g * (per + 2) * d:(g + 1) * (per + 2) * d]
        assert torch.equal(block[:per * d], q[g * per * d:(g + 1) * per * d])
        assert torch.equal(block[per * d:(per + 1) * d], k[g * d:(g + 1) * d])
        assert torch.equal(block[(per + 1) * d:], v[g * d:(g + 1) * d])
    for a, b in zip(mapping.from_megatron(fused, dims), (q, k, v)):
        assert torch.equal(a, b)


def test_gated_mlp_is_gate_then_up():
    dims = exaone_dims(get_preset("tiny"))
    mapping = GatedMLP("m", gate="g", up="u")
    gate, up = torch.randn(176, 64), torch.randn(176, 64)
    fused = mapping.to_megatron([gate, up], dims)
    assert torch.equal(fused[:176], gate) and torch.equal(fused[176:], up)
    back = mapping.from_megatron(fused, dims)
    assert torch.equal(back[0], gate) and torch.equal(back[1], up)


def test_local_spec_names_map_to_table_names():
    canon = EXAONE_HF_TABLE.canonical_megatron_name
    assert canon("decoder.layers.3.input_layernorm.weight") == \
        "decoder.layers.3.self_attention.linear_qkv.layer_norm_weight"
    assert canon("decoder.layers.0.pre_mlp_layernorm.weight") == \
        "decoder.layers.0.mlp.linear_fc1.layer_norm_weight"
    assert canon("decoder.final_layernorm.weight") == "decoder.final_layernorm.weight"
    assert EXAONE_HF_TABLE.tied_megatron_names() == {
        "output_layer.weight": "embedding.word_embeddings.weight"}
