"""Megatron-Bridge plug-in: mappings derived from the converter's table, and the HF-config
translation (pure functions) tested on CPU with config objects as transformers 5 builds them;
registration where Megatron-Bridge imports (NGC containers, GPU)."""

from __future__ import annotations

import importlib.util
import json
from types import SimpleNamespace

import pytest
import torch
from test_hf_config_vintages import LG_JSON, SCALING, SIZES, TOKENS, lg_style_config_class

from nemo_exaone.checkpoint.exaone_hf import (
    EXAONE_HF_TABLE,
    EXAONE_LLAMA_NAMES_TABLE,
    exaone_dims,
)
from nemo_exaone.checkpoint.megatron_bridge import (
    PROVIDER_HF_CONFIG,
    bridge_mapping_specs,
    bridge_provider_kwargs,
    hf_config_to_arch,
    provider_kwargs,
    provider_to_hf_config,
    weight_table_for,
)
from nemo_exaone.config.hf_config import HFConfigError
from nemo_exaone.config.presets import ExaoneArch, get_preset


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


def _native(**changes):
    from transformers import ExaoneConfig

    kwargs = dict(num_hidden_layers=2, tie_word_embeddings=True,
                  rope_parameters={**SCALING, "rope_theta": 1000000.0}, **SIZES, **TOKENS)
    return ExaoneConfig(**{**kwargs, **changes})


def _check_translation(kwargs: dict) -> None:
    assert kwargs["rotary_base"] == 1000000.0
    assert kwargs["rope_scaling"] is True and kwargs["rope_scaling_factor"] == 8.0
    assert kwargs["share_embeddings_and_output_weights"] is True
    assert (kwargs["num_layers"], kwargs["hidden_size"], kwargs["ffn_hidden_size"],
            kwargs["num_attention_heads"], kwargs["num_query_groups"], kwargs["kv_channels"],
            kwargs["vocab_size"], kwargs["seq_length"]) == (2, 64, 176, 4, 2, 16, 256, 16384)
    assert kwargs["layernorm_epsilon"] == 1e-5 and kwargs["add_bias_linear"] is False


def test_translation_of_config_objects_transformers_5_builds():
    lg = lg_style_config_class()(num_layers=2, rope_theta=1000000.0, rope_scaling=dict(SCALING),
                                 tie_word_embeddings=True, **SIZES, **TOKENS)
    for config in (_native(), lg):
        # what the old plug-in read: no rope_scaling key at all under transformers 5
        assert "rope_scaling" not in config.to_dict()
        kwargs, arch = bridge_provider_kwargs(config, dtype=torch.bfloat16)
        _check_translation(kwargs)
        assert kwargs["bf16"] is True and kwargs["params_dtype"] == torch.bfloat16
        assert arch.eos_token_id == 3


def test_translation_reads_config_json_when_the_object_hides_an_absent_tie(tmp_path):
    from transformers import AutoConfig

    (tmp_path / "config.json").write_text(json.dumps(LG_JSON))  # tie left out: tied
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert loaded.tie_word_embeddings is False  # transformers 5 fills in its own default
    kwargs, _ = bridge_provider_kwargs(loaded, config_path=tmp_path / "config.json")
    _check_translation(kwargs)


def test_rope_lost_by_the_setter_is_an_error_not_a_default():
    config = _native(rope_parameters=None)
    config.rope_scaling = dict(SCALING)  # transformers 5 stores it as rope_parameters, no theta
    with pytest.raises(HFConfigError, match="rope_theta is missing"):
        hf_config_to_arch(config)


def test_export_config_is_exaone_in_lg_spelling_with_what_the_run_changed():
    kwargs, arch = bridge_provider_kwargs(_native())
    provider = SimpleNamespace(**kwargs)
    setattr(provider, PROVIDER_HF_CONFIG, arch.to_hf_config())
    provider.seq_length = 32768  # e.g. context extension
    config = provider_to_hf_config(provider)
    assert config["model_type"] == "exaone" and config["architectures"] == ["ExaoneForCausalLM"]
    assert config["num_hidden_layers"] == 2 and config["max_position_embeddings"] == 32768
    assert config["tie_word_embeddings"] is True and "auto_map" not in config
    assert "id2label" not in config and "return_dict" not in config  # no bookkeeping keys
    again = ExaoneArch.from_hf_config(config)
    assert again.rope_theta == 1000000.0 and again.rope_scaling == SCALING
    # without a stored source config: LG's spelling, which LG's remote code and transformers
    # 5 both read
    plain = SimpleNamespace(**provider_kwargs(get_preset("exaone3.5-2.4b")))
    lg = provider_to_hf_config(plain)
    assert lg["num_layers"] == 30 and lg["rope_scaling"]["rope_type"] == "llama3"
    assert lg["rope_theta"] == 1000000.0 and lg["tie_word_embeddings"] is True
    assert "num_hidden_layers" not in lg


def test_loaded_transformers_5_models_use_the_llama_names_table():
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_config(_native(tie_word_embeddings=False))
    names = set(model.state_dict())
    table = weight_table_for(names)
    assert table is EXAONE_LLAMA_NAMES_TABLE
    arch = hf_config_to_arch(_native(tie_word_embeddings=False))
    targets = {t for b in table.bind(exaone_dims(arch)) for t in b.targets}
    assert targets == names
    specs = {kw.get("hf_param") or kw.get("q") for _, kw in bridge_mapping_specs(table)}
    assert "model.layers.*.self_attn.q_proj.weight" in specs
    assert weight_table_for(["transformer.wte.weight"]) is EXAONE_HF_TABLE


def test_provider_kwargs_follow_the_architecture():
    kwargs = provider_kwargs(get_preset("exaone3.5-2.4b"))
    assert kwargs["kv_channels"] == 80 and kwargs["num_query_groups"] == 8
    assert kwargs["rope_scaling"] is True and kwargs["rope_scaling_factor"] == 8.0
    assert kwargs["share_embeddings_and_output_weights"] is True
    three = provider_kwargs(get_preset("exaone3.0-7.8b"))
    assert three["rope_scaling"] is False and three["rotary_base"] == 500000.0


@pytest.mark.gpu
@pytest.mark.skipif(importlib.util.find_spec("megatron.bridge") is None,
                    reason="Megatron-Bridge is not installed")
def test_bridge_registers_with_megatron_bridge():
    # Installed but not importable (no TE, wrong Python) is a failure, not a skip.
    from nemo_exaone.checkpoint.megatron_bridge import register_exaone_bridge

    bridge_cls = register_exaone_bridge()
    assert register_exaone_bridge() is bridge_cls
    bridge = bridge_cls()
    registry = bridge.mapping_registry()
    qkv = registry.megatron_to_hf_lookup("decoder.layers.3.self_attention.linear_qkv.weight")
    assert qkv is not None and "transformer.h.3.attn.attention.q_proj.weight" in str(
        qkv.hf_param)

    class _Pretrained:  # the part of Bridge's PreTrainedCausalLM that provider_bridge reads
        config = _native()

    provider = bridge.provider_bridge(_Pretrained())
    assert provider.num_layers == 2 and provider.kv_channels == 16
    assert provider.rotary_base == 1000000.0 and provider.rope_scaling
    assert provider.share_embeddings_and_output_weights
    assert bridge_cls.megatron_to_hf_config(provider)["model_type"] == "exaone"
