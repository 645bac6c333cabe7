"""The NeMo-Run recipes build for every preset (no run): the preset's model, its H100 layout,
LoRA or full fine-tuning, and a configuration NeMo-Run can serialise for its launchers."""

from __future__ import annotations

import pytest

PRESETS = ("exaone3.0-7.8b", "exaone3.5-2.4b", "exaone3.5-7.8b", "exaone3.5-32b")


def _strategy(recipe) -> tuple[int, int, int, bool]:
    s = recipe.trainer.strategy
    return (s.tensor_model_parallel_size, s.pipeline_model_parallel_size,
            s.context_parallel_size, s.sequence_parallel)


@pytest.mark.parametrize("preset", PRESETS)
def test_recipes_build_for_every_preset(preset, tmp_path):
    import nemo_run as run
    from nemo.collections import llm
    from nemo_run.core.serialization.zlib_json import ZlibJSONSerializer

    from nemo_exaone.nemo import PRESET_CONFIGS, ExaoneModel
    from nemo_exaone.nemo.recipes import H100_LAYOUTS, finetune_recipe, for_preset

    recipes = for_preset(preset)
    pre = recipes.pretrain_recipe(dir=str(tmp_path), name="pre")
    lora = recipes.finetune_recipe(resume_path="/ckpt/x", peft_scheme="lora")
    full = finetune_recipe(preset, peft_scheme=None, seq_length=4096)
    for recipe, fn, kind in ((pre, llm.pretrain, "pretrain"), (lora, llm.finetune, "lora"),
                             (full, llm.finetune, "full")):
        assert isinstance(recipe, run.Partial) and recipe.__fn_or_cls__ is fn
        assert recipe.model.__fn_or_cls__ is ExaoneModel
        assert recipe.model.config.__fn_or_cls__ is PRESET_CONFIGS[preset]
        layout = H100_LAYOUTS[preset][kind]
        assert _strategy(recipe) == (layout.tp, layout.pp, layout.cp, layout.sp), kind
        assert recipe.trainer.num_nodes == layout.num_nodes
        assert ZlibJSONSerializer().deserialize(ZlibJSONSerializer().serialize(recipe)) == recipe
    assert pre.model.config.seq_length == pre.data.seq_length == 8192
    assert lora.peft.__fn_or_cls__.__name__ == "LoRA" and lora.optim.config.lr == 1e-4
    assert lora.resume.restore_config.path == "/ckpt/x"
    assert getattr(full, "peft", None) is None and full.optim.config.lr == 5e-6
    assert full.model.config.seq_length == full.data.seq_length == 4096
    assert full.resume.restore_config.path.startswith("nemo://LGAI-EXAONE/EXAONE-")


def test_recipe_errors_name_the_choices():
    from nemo_exaone.nemo.recipes import finetune_recipe, pretrain_recipe

    with pytest.raises(ValueError, match="exaone3.5-2.4b"):
        pretrain_recipe("tiny4")
    with pytest.raises(ValueError, match="peft_scheme='qlora'"):
        finetune_recipe("exaone3.5-2.4b", peft_scheme="qlora")
