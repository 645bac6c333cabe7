"""The NeMo 2 model class: presets from our table, connectors registered, and
``configure_model`` equal to our builder (names, shapes, count; logits for the same weights)."""

from __future__ import annotations

import pytest
import torch

from nemo_exaone.checkpoint.mcore_layout import single_process_megatron
from nemo_exaone.config.presets import PRESET_TABLE, get_preset

REAL_PRESETS = ("exaone3.0-7.8b", "exaone3.5-2.4b", "exaone3.5-7.8b", "exaone3.5-32b")
CLASS_NAMES = {"exaone3.0-7.8b": "Exaone30Config7_8B", "exaone3.5-2.4b": "Exaone35Config2_4B",
               "exaone3.5-7.8b": "Exaone35Config7_8B", "exaone3.5-32b": "Exaone35Config32B"}


@pytest.mark.parametrize("preset", REAL_PRESETS)
def test_preset_classes_are_the_table(preset):
    import nemo_exaone.nemo as nx
    from nemo_exaone.nemo import ExaoneConfig

    cls = getattr(nx, CLASS_NAMES[preset])
    config = cls()
    assert isinstance(config, ExaoneConfig) and config.preset == preset
    arch = get_preset(preset)
    assert config.to_arch().hf_differences(arch) == []
    assert config.to_arch().to_hf_config() == arch.to_hf_config()
    assert config.share_embeddings_and_output_weights == arch.tie_word_embeddings
    assert (config.normalization, config.gated_linear_unit, config.add_bias_linear) == (
        "RMSNorm", True, False)
    assert config.rope_scaling == (arch.rope_scaling is not None)


def test_every_exaone3_preset_has_a_class_and_4_0_is_refused():
    from nemo_exaone.nemo import PRESET_CONFIGS, ExaoneConfig, config_for_preset

    assert set(PRESET_CONFIGS) == {n for n, t in PRESET_TABLE.items()
                                   if t.get("model_type") == "exaone"}
    with pytest.raises(ValueError, match="exaone4.0-1.2b"):
        config_for_preset("exaone4.0-1.2b")
    with pytest.raises(ValueError, match="model_type 'exaone4'"):
        ExaoneConfig.from_arch(get_preset("exaone4.0-1.2b"))


def test_config_changes_reach_the_exported_hf_config():
    from nemo_exaone.nemo import config_for_preset

    arch = config_for_preset("exaone3.5-2.4b", num_layers=4, rotary_base=10000).to_arch()
    assert (arch.num_layers, arch.rope_theta) == (4, 10000.0)
    assert arch.to_hf_config()["auto_map"] == PRESET_TABLE["exaone3.5-2.4b"]["auto_map"]


def test_connectors_are_registered(tmp_path):
    from nemo_exaone.nemo import ExaoneModel
    from nemo_exaone.nemo.connectors import HFExaoneExporter, HFExaoneImporter

    importer = ExaoneModel.importer(f"hf://{tmp_path}")
    assert isinstance(importer, HFExaoneImporter) and str(importer) == str(tmp_path)
    exporter = ExaoneModel.exporter("hf", tmp_path)
    assert isinstance(exporter, HFExaoneExporter)


def _shapes(model) -> dict[str, tuple[int, ...]]:
    return {name: tuple(p.shape) for name, p in model.named_parameters()}


@pytest.mark.parametrize("preset", REAL_PRESETS)
def test_configure_model_on_meta_equals_our_builder(preset):
    from nemo_exaone.model.builder import ModelOptions, build_model
    from nemo_exaone.nemo import ExaoneModel, config_for_preset

    with single_process_megatron():
        ours = build_model(get_preset(preset), options=ModelOptions(spec="local"),
                           meta_device=True)
        model = ExaoneModel(config_for_preset(preset, init_model_with_meta_device=True,
                                              use_cpu_initialization=True,
                                              perform_initialization=False))
        model.configure_model()
        theirs = model.module
    assert next(theirs.parameters()).device.type == "meta"
    assert _shapes(theirs) == _shapes(ours)
    assert sum(p.numel() for p in theirs.parameters()) == sum(
        p.numel() for p in ours.parameters())


def test_configure_model_logits_equal_ours():
    """Same weights, same tokens: NeMo's model and ours give the same logits (fp32)."""
    from nemo_exaone.model.builder import ModelOptions, build_model
    from nemo_exaone.nemo import ExaoneModel, config_for_preset

    arch = get_preset("tiny")
    with single_process_megatron():
        from megatron.core.tensor_parallel.random import model_parallel_cuda_manual_seed

        model_parallel_cuda_manual_seed(7)
        ours = build_model(arch, options=ModelOptions(spec="local")).eval()
        model = ExaoneModel(config_for_preset("tiny", use_cpu_initialization=True))
        model.configure_model()
        theirs = model.module.eval()
        assert _shapes(theirs) == _shapes(ours)
        theirs.load_state_dict(ours.state_dict(), strict=True)
        assert torch.equal(theirs.rotary_pos_emb.inv_freq, ours.rotary_pos_emb.inv_freq)
        tokens = torch.randint(0, arch.vocab_size, (2, 24), generator=torch.Generator()
                               .manual_seed(0))
        positions = torch.arange(24).expand(2, 24)
        with torch.no_grad():
            want = ours(tokens, positions, None)
            got = theirs(tokens, positions, None)
    assert want.shape == (2, 24, arch.vocab_size)
    assert torch.allclose(got, want, rtol=0, atol=1e-5), (got - want).abs().max()
