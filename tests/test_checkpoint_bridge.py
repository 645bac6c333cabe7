"""Megatron-Bridge plug-in: mappings derived from the converter's table; registration where
Megatron-Bridge imports (NGC containers, GPU)."""

from __future__ import annotations

import importlib.util

import pytest

from nemo_exaone.checkpoint.exaone_hf import EXAONE_HF_TABLE
from nemo_exaone.checkpoint.megatron_bridge import bridge_mapping_specs, provider_kwargs
from nemo_exaone.config.presets import get_preset


def test_bridge_specs_cover_the_table_with_wildcards():
    specs = bridge_mapping_specs()
    kinds = [k for k, _ in specs]
    assert kinds.count("QKVMapping") == 1 and kinds.count("GatedMLPMapping") == 1
    megatron = {kw["megatron_param"] for _, kw in specs}
    for mapping in EXAONE_HF_TABLE.mappings:
        assert mapping.megatron.replace("{i}", "*") in megatron
    # Both spellings of the fused norms (TE spec, local spec) reach the same HF tensor.
    by_megatron = {kw["megatron_param"]: kw.get("hf_param") for _, kw in specs}
    assert by_megatron["decoder.layers.*.input_layernorm.weight"] == \
        by_megatron["decoder.layers.*.self_attention.linear_qkv.layer_norm_weight"] == \
        "transformer.h.*.ln_1.weight"
    assert all("{i}" not in str(kw) for _, kw in specs)


def test_provider_kwargs_follow_the_architecture():
    kwargs = provider_kwargs(get_preset("exaone3.5-2.4b"))
    assert kwargs["kv_channels"] == 80 and kwargs["num_query_groups"] == 8
    assert kwargs["rope_scaling"] is True and kwargs["rope_scaling_factor"] == 8.0
    assert kwargs["share_embeddings_and_output_weights"] is True
    assert "rope_scaling" not in provider_kwargs(get_preset("exaone3.0-7.8b"))


@pytest.mark.gpu
def test_bridge_registers_with_megatron_bridge():
    if importlib.util.find_spec("megatron.bridge") is None:
        pytest.skip("Megatron-Bridge is not installed")
    try:
        import megatron.bridge  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - needs TE/CUDA/Python 3.12
        pytest.skip(f"Megatron-Bridge does not import here: {exc}")
    from transformers import PretrainedConfig

    from nemo_exaone.checkpoint.megatron_bridge import register_exaone_bridge

    bridge_cls = register_exaone_bridge()
    assert register_exaone_bridge() is bridge_cls
    bridge = bridge_cls()
    registry = bridge.mapping_registry()
    qkv = registry.megatron_to_hf_lookup("decoder.layers.3.self_attention.linear_qkv.weight")
    assert qkv is not None and "transformer.h.3.attn.attention.q_proj.weight" in str(
        qkv.hf_param)

    class _Pretrained:  # the part of Bridge's PreTrainedCausalLM that provider_bridge reads
        config = PretrainedConfig(**get_preset("exaone3.5-2.4b").to_hf_config())

    provider = bridge.provider_bridge(_Pretrained())
    assert provider.num_layers == 30 and provider.kv_channels == 80
    assert provider.share_embeddings_and_output_weights
