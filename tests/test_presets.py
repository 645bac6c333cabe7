"""Architecture presets: HF config round trip and validation errors."""

from __future__ import annotations

import pytest

from nemo_exaone.config.presets import PRESET_NAMES, ExaoneArch, get_preset

# The EXAONE-3.5-2.4B-Instruct config.json fields as published (values in shared notes).
OFFICIAL_STYLE_2P4B = {
    "activation_function": "silu",
    "architectures": ["ExaoneForCausalLM"],
    "attention_dropout": 0.0,
    "auto_map": {"AutoConfig": "configuration_exaone.ExaoneConfig",
                 "AutoModelForCausalLM": "modeling_exaone.ExaoneForCausalLM"},
    "bos_token_id": 1,
    "embed_dropout": 0.0,
    "eos_token_id": 361,
    "hidden_size": 2560,
    "initializer_range": 0.02,
    "intermediate_size": 7168,
    "layer_norm_epsilon": 1e-05,
    "max_position_embeddings": 32768,
    "model_type": "exaone",
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "num_layers": 30,
    "pad_token_id": 0,
    "rope_scaling": {"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "rope_theta": 1000000.0,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.43.1",
    "use_cache": True,
    "vocab_size": 102400,
}


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_hf_config_round_trip_every_preset(name):
    arch = get_preset(name)
    hf = arch.to_hf_config()
    again = ExaoneArch.from_hf_config(hf, name=name)
    assert again.to_hf_config() == hf
    for field in ("num_layers", "hidden_size", "num_attention_heads", "num_key_value_heads",
                  "intermediate_size", "max_position_embeddings", "rope_theta", "rope_scaling",
                  "tie_word_embeddings", "vocab_size", "head_dim"):
        assert getattr(again, field) == getattr(arch, field), field


def test_official_style_config_round_trips_exactly_and_matches_preset():
    arch = ExaoneArch.from_hf_config(OFFICIAL_STYLE_2P4B)
    assert arch.to_hf_config() == dict(sorted(OFFICIAL_STYLE_2P4B.items()))
    preset = get_preset("exaone3.5-2.4b")
    for field in ("num_layers", "hidden_size", "num_attention_heads", "num_key_value_heads",
                  "intermediate_size", "max_position_embeddings", "rope_theta", "rope_scaling",
                  "tie_word_embeddings", "vocab_size", "head_dim", "layer_norm_epsilon"):
        assert getattr(arch, field) == getattr(preset, field), field
    assert arch.head_dim == 80  # 2560 / 32: not the usual 128


def test_table_values_from_the_hf_configs():
    expected = {  # (layers, hidden, heads, kv, ffn, max_pos, theta, tied)
        "exaone3.0-7.8b": (32, 4096, 32, 8, 14336, 4096, 500000.0, False),
        "exaone3.5-2.4b": (30, 2560, 32, 8, 7168, 32768, 1e6, True),
        "exaone3.5-7.8b": (32, 4096, 32, 8, 14336, 32768, 1e6, False),
        "exaone3.5-32b": (64, 5120, 40, 8, 27392, 32768, 1e6, False),
    }
    for name, row in expected.items():
        a = get_preset(name)
        assert (a.num_layers, a.hidden_size, a.num_attention_heads, a.num_key_value_heads,
                a.intermediate_size, a.max_position_embeddings, a.rope_theta,
                a.tie_word_embeddings) == row, name
        assert a.vocab_size == 102400 and a.eos_token_id == 361
        assert (a.rope_scaling is None) == name.startswith("exaone3.0")


def test_unknown_preset_lists_choices():
    with pytest.raises(ValueError, match="unknown preset 'exaone9'.*exaone3.5-2.4b"):
        get_preset("exaone9")


@pytest.mark.parametrize("change, message", [
    ({"model_type": "exaone5"}, "model_type='exaone5'.*'exaone4' \\(4.0\\)"),
    # An EXAONE 3.x config relabelled 4.0 is read as 4.0 and refused for its 3.x spelling.
    ({"model_type": "exaone4"}, "missing required field.*num_hidden_layers"),
    ({"activation_function": "gelu"}, "activation_function='gelu'"),
    ({"num_key_value_heads": 5}, "num_attention_heads=32 is not divisible by num_key_value_heads=5"),
    ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "rope_type='yarn'"),
    ({"rope_scaling": {**OFFICIAL_STYLE_2P4B["rope_scaling"], "low_freq_factor": 2.0}},
     "low_freq_factor"),
])
def test_bad_hf_config_is_refused_naming_the_field(change, message):
    with pytest.raises(ValueError, match=message):
        ExaoneArch.from_hf_config({**OFFICIAL_STYLE_2P4B, **change})


def test_missing_required_field_is_named():
    config = dict(OFFICIAL_STYLE_2P4B)
    del config["num_layers"]
    with pytest.raises(ValueError, match="missing required field.*num_layers"):
        ExaoneArch.from_hf_config(config)
