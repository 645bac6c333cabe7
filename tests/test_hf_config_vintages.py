"""Every vintage of an EXAONE 3.x config.json reads as the same architecture, or is refused.

The same weights are saved with the config as LG's remote class writes it (its semantics,
written here), as transformers 5's native ``ExaoneConfig`` writes it (a real
``save_pretrained`` of a model transformers loaded), as LG's class writes it under
transformers 5, with Llama names and a legacy ``type`` key (4.x tools), and with
``rope_parameters`` nested per layer type; each converts to byte-identical Megatron tensors
and states the same RoPE.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from nemo_exaone.checkpoint.synthetic import write_random_hf_checkpoint
from nemo_exaone.config.hf_config import HFConfigError, describe_rope, read_hf_config
from nemo_exaone.config.presets import PRESET_NAMES, PRESET_TABLE, ExaoneArch, get_preset

SCALING = {"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
           "original_max_position_embeddings": 8192, "rope_type": "llama3"}
SIZES = dict(vocab_size=256, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
             intermediate_size=176, max_position_embeddings=16384)
TOKENS = dict(bos_token_id=1, eos_token_id=3, pad_token_id=0)

# LG's remote ExaoneConfig as it writes a tied 3.5-style model (4.4x): LG names, top-level RoPE,
# no tie_word_embeddings (left out when true).
LG_JSON = {
    "activation_function": "silu", "architectures": ["ExaoneForCausalLM"],
    "attention_dropout": 0.0, "embed_dropout": 0.0, "initializer_range": 0.02,
    "layer_norm_epsilon": 1e-05, "model_type": "exaone", "num_layers": 2, "rope_scaling": SCALING,
    "rope_theta": 1000000.0, "torch_dtype": "float32", "transformers_version": "4.43.1",
    "use_cache": True, **SIZES, **TOKENS,
}
# A 4.x tool with Llama names and the legacy ``type`` key, explicit tie.
LLAMA_NAMES_JSON = {
    "architectures": ["ExaoneForCausalLM"], "hidden_act": "silu", "model_type": "exaone",
    "num_hidden_layers": 2, "rms_norm_eps": 1e-05, "rope_theta": 1000000.0,
    "rope_scaling": {k if k != "rope_type" else "type": v for k, v in SCALING.items()},
    "tie_word_embeddings": True, **SIZES, **TOKENS,
}
# transformers 5 style with rope_parameters nested per layer type.
NESTED_JSON = {
    "architectures": ["ExaoneForCausalLM"], "hidden_act": "silu", "model_type": "exaone",
    "num_hidden_layers": 2, "rms_norm_eps": 1e-05, "layer_types": ["full_attention"] * 2,
    "rope_parameters": {"full_attention": {**SCALING, "rope_theta": 1000000.0}},
    "tie_word_embeddings": True, **SIZES, **TOKENS,
}


def lg_style_config_class():
    """A PretrainedConfig with the semantics of LG's remote ``ExaoneConfig`` (written for this
    test from its documented arguments and defaults, not copied)."""
    from transformers import PretrainedConfig

    class LGStyleExaoneConfig(PretrainedConfig):
        model_type = "exaone"
        attribute_map = {"num_hidden_layers": "num_layers"}

        def __init__(self, vocab_size=102400, max_position_embeddings=2048, hidden_size=2048,
                     num_layers=32, num_attention_heads=32, num_key_value_heads=None,
                     intermediate_size=None, activation_function="silu", rope_theta=10000.0,
                     rope_scaling=None, embed_dropout=0.0, attention_dropout=0.0,
                     layer_norm_epsilon=1e-5, initializer_range=0.02, use_cache=True,
                     bos_token_id=0, eos_token_id=2, **kwargs):
            self.vocab_size, self.hidden_size = vocab_size, hidden_size
            self.max_position_embeddings, self.num_layers = max_position_embeddings, num_layers
            self.num_attention_heads = num_attention_heads
            self.num_key_value_heads = num_key_value_heads or num_attention_heads
            self.intermediate_size = intermediate_size or 4 * hidden_size
            self.activation_function, self.layer_norm_epsilon = activation_function, \
                layer_norm_epsilon
            self.embed_dropout, self.attention_dropout = embed_dropout, attention_dropout
            self.initializer_range, self.use_cache = initializer_range, use_cache
            self.rope_theta, self.rope_scaling = rope_theta, rope_scaling
            super().__init__(bos_token_id=bos_token_id, eos_token_id=eos_token_id, **kwargs)

    return LGStyleExaoneConfig


def native_config(**changes):
    # transformers fills dicts it is given (rope_theta): pass copies, never SCALING itself.
    from transformers import ExaoneConfig

    kwargs = dict(num_hidden_layers=2, tie_word_embeddings=True,
                  rope_parameters={**SCALING, "rope_theta": 1000000.0}, **SIZES, **TOKENS)
    kwargs.update(changes)
    return ExaoneConfig(**kwargs)


def _reference() -> ExaoneArch:
    return ExaoneArch.from_hf_config(LG_JSON)


def _assert_rope(arch: ExaoneArch) -> None:
    assert arch.rope_theta == 1000000.0
    assert arch.rope_scaling == SCALING
    assert arch.tie_word_embeddings is True and arch.num_layers == 2


# ----------------------------------------------------------------------------- reader
@pytest.mark.parametrize("config", [LG_JSON, LLAMA_NAMES_JSON, NESTED_JSON],
                         ids=["lg", "llama-names-4x", "nested-rope-parameters"])
def test_raw_json_of_each_vintage_reads_the_same_and_round_trips(config):
    arch = ExaoneArch.from_hf_config(config)
    _assert_rope(arch)
    assert arch.hf_differences(_reference()) == []
    assert arch.to_hf_config() == dict(sorted(config.items())) | (
        {"rope_scaling": SCALING} if config is LLAMA_NAMES_JSON else {})


def test_config_objects_transformers_5_builds_read_the_same(tmp_path):
    native = native_config()
    lg_class = lg_style_config_class()(num_layers=2, rope_theta=1000000.0, rope_scaling=dict(SCALING),
                                       tie_word_embeddings=True, **SIZES, **TOKENS)
    for config in (native, lg_class):
        for form in (config.to_dict(), _saved(config, tmp_path / type(config).__name__)):
            arch = ExaoneArch.from_hf_config(form)
            _assert_rope(arch)
            assert arch.hf_differences(_reference()) == [], type(config).__name__
    # LG's class under transformers 5 writes LG names with rope_parameters (no rope_scaling).
    assert read_hf_config(lg_class.to_dict()).vintage == "lg+transformers5"
    assert read_hf_config(native.to_dict()).vintage == "transformers5"


def _saved(config, directory: Path) -> dict:
    config.save_pretrained(directory)
    return json.loads((directory / "config.json").read_text())


def test_tie_word_embeddings_absent_means_tied_and_such_a_checkpoint_converts(tmp_path):
    from nemo_exaone.checkpoint.hf_to_mcore import convert_hf_to_mcore

    arch = _reference()
    assert "tie_word_embeddings" not in LG_JSON and arch.tie_word_embeddings is True
    hf = write_random_hf_checkpoint(tmp_path / "hf", arch)
    (hf / "config.json").write_text(json.dumps(LG_JSON))
    convert_hf_to_mcore(hf, tmp_path / "mc", progress=False)  # no lm_head in the files
    # transformers 5 writes the key always; absent there would be read as false by transformers
    # and as true by LG's class, so that combination is refused, naming it.
    with pytest.raises(HFConfigError, match="tie_word_embeddings is missing"):
        read_hf_config({k: v for k, v in NESTED_JSON.items() if k != "tie_word_embeddings"})


def _megatron_tensors(directory: Path) -> dict[str, torch.Tensor]:
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    reader = FileSystemReader(str(directory))
    metadata = reader.read_metadata()
    state = {k: torch.empty(v.size, dtype=v.properties.dtype)
             for k, v in metadata.state_dict_metadata.items()
             if isinstance(v, TensorStorageMetadata)}
    torch.distributed.checkpoint.load(state, storage_reader=reader, no_dist=True)
    return state


def test_every_vintage_converts_to_identical_megatron_checkpoints(tmp_path):
    from transformers import AutoModelForCausalLM

    from nemo_exaone.checkpoint.hf_to_mcore import convert_hf_to_mcore
    from nemo_exaone.checkpoint.metadata import read_metadata

    base = write_random_hf_checkpoint(tmp_path / "base", _reference())
    sources: dict[str, Path] = {}
    for name, config in (("lg", LG_JSON), ("llama-names", LLAMA_NAMES_JSON),
                         ("nested", NESTED_JSON)):
        shutil.copytree(base, tmp_path / name)
        (tmp_path / name / "config.json").write_text(json.dumps(config))
        sources[name] = tmp_path / name
    lg_class = lg_style_config_class()(num_layers=2, rope_theta=1000000.0, rope_scaling=dict(SCALING),
                                       tie_word_embeddings=True, **SIZES, **TOKENS)
    shutil.copytree(base, tmp_path / "lg-class-tf5")
    lg_class.save_pretrained(tmp_path / "lg-class-tf5")
    sources["lg-class-tf5"] = tmp_path / "lg-class-tf5"
    # transformers 5 natively: load the weights with its own ExaoneConfig, save them again.
    shutil.copytree(base, tmp_path / "tf5-in")
    native_config().save_pretrained(tmp_path / "tf5-in")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "tf5-in", dtype=torch.float32)
    model.save_pretrained(tmp_path / "tf5")
    saved = json.loads((tmp_path / "tf5" / "config.json").read_text())
    assert "num_hidden_layers" in saved and "rope_parameters" in saved and "num_layers" not in saved
    sources["tf5-native"] = tmp_path / "tf5"

    reference = None
    for name, hf in sources.items():
        out = tmp_path / f"mc-{name}"
        report = convert_hf_to_mcore(hf, out, progress=False)
        arch = read_metadata(out).arch()
        _assert_rope(arch)
        assert arch.hf_differences(_reference()) == [], name
        assert describe_rope(arch.rope_theta, arch.rope_scaling) in report.summary(), name
        tensors = _megatron_tensors(out)
        if reference is None:
            reference = tensors
            continue
        assert tensors.keys() == reference.keys(), name
        for key, value in reference.items():
            assert torch.equal(tensors[key], value), (name, key)


# ----------------------------------------------------------------------------- refusals
@pytest.mark.parametrize("change, message", [
    ({"rope_theta": None}, "rope_theta is missing"),
    ({"num_hidden_layers": 3}, "num_layers is stated differently as num_layers=2, "
                               "num_hidden_layers=3"),
    ({"rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, **{
        k: v for k, v in SCALING.items() if k != "rope_type"}}}, "RoPE base is stated differently"),
    ({"attention_bias": True}, "attention_bias=True"),
    ({"sliding_window": 4096}, "sliding_window=4096"),
    ({"num_local_experts": 8}, "unknown field num_local_experts"),
    ({"layer_types": ["full_attention", "sliding_attention"]}, "layer_types"),
    ({"rope_scaling": {**SCALING, "rope_type": "yarn"}}, "rope_type='yarn'"),
    ({"intermediate_size": None}, "intermediate_size is missing.*4 \\* hidden_size.*14336"),
    ({"eos_token_id": None}, "eos_token_id is missing"),
    ({"model_type": "llama"}, "model_type='llama'"),
])
def test_a_field_that_cannot_be_placed_is_named(change, message):
    config = {k: v for k, v in {**LG_JSON, **change}.items() if v is not None}
    with pytest.raises(HFConfigError, match=message):
        read_hf_config(config, "some/config.json")


def test_lg_30_class_attributes_at_their_defaults_are_carried_others_refused():
    from nemo_exaone.config.hf_config import LG_LEGACY_DEFAULTS

    # what config.to_dict() of LG's 3.0 remote class lists beside the real fields
    config = {**LG_JSON, **LG_LEGACY_DEFAULTS, "pruned_heads": {}}
    arch = ExaoneArch.from_hf_config(config)
    assert arch.hf_differences(_reference()) == [] and arch.hf_extra["rotary_pct"] == 0.25
    with pytest.raises(HFConfigError, match="rotary_pct=0.5"):
        read_hf_config({**config, "rotary_pct": 0.5})
    with pytest.raises(HFConfigError, match="pruned_heads"):
        read_hf_config({**config, "pruned_heads": {"0": [1]}})


def test_harmless_unknown_fields_are_carried():
    config = {**LG_JSON, "unsloth_version": "2024.9", "output_hidden_states": False}
    arch = ExaoneArch.from_hf_config(config)
    assert arch.hf_extra["unsloth_version"] == "2024.9"
    assert arch.to_hf_config() == dict(sorted(config.items()))


# ----------------------------------------------------------------------------- presets
@pytest.mark.parametrize("name", [n for n in PRESET_NAMES if n != "tiny" and
                                  PRESET_TABLE[n]["model_type"] == "exaone"])
def test_presets_are_the_published_configs(name):
    """EXAONE 3.x (LG's remote-code configs); 4.0's are checked in test_exaone4_model."""
    published = PRESET_TABLE[name]
    arch = get_preset(name)
    assert arch.to_hf_config() == dict(sorted(published.items()))
    assert published["auto_map"]["AutoModelForCausalLM"] == "modeling_exaone.ExaoneForCausalLM"
    assert published["use_cache"] is True
    assert ("head_dim" in published) == name.startswith("exaone3.5")
    assert ("tie_word_embeddings" in published) == (name != "exaone3.5-2.4b")
    assert arch.tie_word_embeddings is (name == "exaone3.5-2.4b")
