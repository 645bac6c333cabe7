"""The EXAONE 4.0 presets are the published config.json files of LGAI-EXAONE/EXAONE-4.0-1.2B and
LGAI-EXAONE/EXAONE-4.0-32B, every field (``transformers_version`` aside, which names the writer).

Where each value was checked (the presets module docstring has the same list):

* sizes, context, RoPE theta, vocab, tying: the model table of transformers'
  ``docs/source/en/model_doc/exaone4.md`` (written with LG AI Research);
* 1.2B, every field: the config.json as re-saved by transformers 4.57.3 beside quantized copies
  of the model (github his0si/EXAONE-4.0-1.2B ``model/config.json``, leegongman/
  lg-exaone-4.0-quantization ``.../OmniQuant_EXAONE_v4/config.json``): bos 1, eos 361, pad 0,
  head_dim 64, rms_norm_eps 1e-05, llama3 RoPE x16 over 8192, sliding_window and
  sliding_window_pattern null, tied;
* 32B, every field but the pattern: NVIDIA/TensorRT-LLM
  ``tests/unittest/_torch/modeling/test_modeling_exaone4.py`` (``EXAONE4_SINGLE_LAYER_CONFIG``,
  the 32B config with ``transformers_version`` 4.54.0.dev0, cut to 4 layers and a window of 4
  "instead of 4096" for the test): bos 1, eos 361, pad 0, head_dim 128, 131072 positions,
  untied, torch_dtype bfloat16;
* the pattern: transformers issue #39696 ("for the EXAONE-4.0-32B model, sliding_window_pattern
  is 'LLLG'"; "for the EXAONE-4.0-1.2B model ... set to None").

The files as first published have no ``layer_types``; the presets state them (what
transformers and TensorRT-LLM derive from the pattern).
"""

from __future__ import annotations

import copy

import pytest

from nemo_exaone.config.presets import ExaoneArch, get_preset

SLIDING, FULL = "sliding_attention", "full_attention"
_ROPE = {"factor": 16.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
         "original_max_position_embeddings": 8192, "rope_type": "llama3"}
_COMMON = {
    "architectures": ["Exaone4ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 1,
    "eos_token_id": 361, "hidden_act": "silu", "initializer_range": 0.02,
    "model_type": "exaone4", "num_key_value_heads": 8, "pad_token_id": 0, "rms_norm_eps": 1e-05,
    "rope_scaling": _ROPE, "rope_theta": 1000000.0, "torch_dtype": "bfloat16", "use_cache": True,
    "vocab_size": 102400,
}
PUBLISHED = {
    "exaone4.0-1.2b": dict(
        _COMMON, head_dim=64, hidden_size=2048, intermediate_size=4096,
        max_position_embeddings=65536, num_attention_heads=32, num_hidden_layers=30,
        sliding_window=None, sliding_window_pattern=None, tie_word_embeddings=True),
    "exaone4.0-32b": dict(
        _COMMON, head_dim=128, hidden_size=5120, intermediate_size=27392,
        max_position_embeddings=131072, num_attention_heads=40, num_hidden_layers=64,
        sliding_window=4096, sliding_window_pattern="LLLG", tie_word_embeddings=False),
}
LAYER_TYPES = {"exaone4.0-1.2b": [FULL] * 30,
               "exaone4.0-32b": [SLIDING, SLIDING, SLIDING, FULL] * 16}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_preset_config_is_the_published_file(name):
    # What `nemo-exaone info NAME --json` prints as hf_config (test_exaone4_model checks that
    # it prints this) is the published file plus the layer_types it implies, nothing else.
    config = get_preset(name).to_hf_config()
    assert config.pop("layer_types") == LAYER_TYPES[name]
    assert config == PUBLISHED[name]


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_file_reads_as_the_preset(name):
    # The file as first published (no layer_types) is read into exactly the preset: the pattern
    # and the null window expand to the same layers, RoPE and token ids included.
    theirs = ExaoneArch.from_hf_config(copy.deepcopy(PUBLISHED[name]), name=name)
    ours = get_preset(name)
    assert ours.hf_differences(theirs) == []
    assert theirs.layer_types == tuple(LAYER_TYPES[name])


@pytest.mark.parametrize("field, value", [
    ("eos_token_id", 2), ("pad_token_id", None), ("max_position_embeddings", 32768),
    ("sliding_window", 2048), ("head_dim", 80), ("tie_word_embeddings", True),
])
def test_a_changed_field_is_a_difference(field, value):
    # The comparison above can fail: a file differing in one field is not the preset.
    changed = dict(copy.deepcopy(PUBLISHED["exaone4.0-32b"]), **{field: value})
    theirs = ExaoneArch.from_hf_config(changed)
    assert [d for d in get_preset("exaone4.0-32b").hf_differences(theirs)
            if d.startswith(f"{field}:")]
