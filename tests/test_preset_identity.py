"""What a preset says it is: its name, and the HF class and model type its exported
config.json declares (transformers picks the model class from these two fields). The name
and the unknown-preset message were unchecked (mutants survived ``make mutation``'s presets
group, see TESTING.md)."""

from __future__ import annotations

import pytest

from nemo_exaone.config.presets import PRESET_NAMES, get_preset


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_preset_name_and_exported_hf_identity(name):
    arch = get_preset(name)
    assert arch.name == name
    config = arch.to_hf_config()
    four = name.startswith("exaone4") or name == "tiny4"
    assert config["model_type"] == ("exaone4" if four else "exaone")
    assert config["architectures"] == (["Exaone4ForCausalLM"] if four else ["ExaoneForCausalLM"])


def test_unknown_preset_is_refused_listing_the_choices():
    with pytest.raises(ValueError, match="unknown preset 'exaone9'; choose one of: "
                                         "exaone3.0-7.8b, exaone3.5-2.4b"):
        get_preset("exaone9")
