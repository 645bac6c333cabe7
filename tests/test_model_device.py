"""Every parameter and buffer of our modules lands on the device Megatron-Core chooses.

With ``use_cpu_initialization=False`` (the CUDA path) Megatron allocates its weights with an
explicit ``device=torch.cuda.current_device()``; a module of ours that allocates without a
device would stay on the CPU and the first CUDA forward would fail. Without a GPU, the meta
device stands in for the current CUDA device: ``torch.cuda.current_device`` returns it, so
any tensor created without asking Megatron's rule ends up on the CPU and is caught.
"""

from __future__ import annotations

import dataclasses

import torch

from nemo_exaone.runtime.launch import spawn_local

STAND_IN = torch.device("meta")


def _off_device(module: torch.nn.Module) -> list[str]:
    tensors = [*module.named_parameters(), *module.named_buffers()]
    return [f"{name} on {t.device}" for name, t in tensors if t.device != STAND_IN]


def _placements() -> dict:
    """Build our norm, one decoder layer of the local spec and whole models (EXAONE 3.x tied
    and untied, EXAONE 4.0) with CPU initialisation off, ``torch.cuda.current_device()`` being the stand-in device."""
    from megatron.core.transformer.spec_utils import build_module

    from nemo_exaone.config.parallel import ParallelConfig
    from nemo_exaone.config.presets import get_preset
    from nemo_exaone.model.attention import SDPACoreAttention
    from nemo_exaone.model.builder import ModelOptions, build_model, transformer_config
    from nemo_exaone.model.norm import ExaoneRMSNorm
    from nemo_exaone.model.spec import transformer_layer_spec
    from nemo_exaone.runtime.distributed import destroy_distributed, init_distributed

    init_distributed(ParallelConfig())
    torch.cuda.current_device = lambda: STAND_IN  # after the CPU layer patched it
    try:
        arch = get_preset("tiny")
        options = ModelOptions(spec="local", extra_config={"use_cpu_initialization": False})
        config = transformer_config(arch, options=options)
        assert config.use_cpu_initialization is False
        norm = ExaoneRMSNorm(config, arch.hidden_size, eps=arch.layer_norm_epsilon)
        layer = build_module(transformer_layer_spec("local"), config=config, layer_number=1)
        models = [build_model(dataclasses.replace(arch, tie_word_embeddings=tied),
                              options=options) for tied in (True, False)]
        # EXAONE 4.0: QK-norm, post-norm linears, sliding-window attention
        exaone4 = build_model(get_preset("tiny4"), options=options)
        kinds = {type(m).__name__ for m in models[0].modules()}
        return {"norm": _off_device(norm), "layer": _off_device(layer),
                "tied model": _off_device(models[0]), "untied model": _off_device(models[1]),
                "exaone4 model": _off_device(exaone4),
                "exaone4 kinds": sorted({type(m).__name__ for m in exaone4.modules()}),
                "untied has output layer": hasattr(models[1], "output_layer")
                and models[1].output_layer.weight is not None,
                "layer_has_ours": [isinstance(layer.input_layernorm, ExaoneRMSNorm),
                                   isinstance(layer.self_attention.core_attention,
                                              SDPACoreAttention)],
                "num_params": sum(1 for _ in models[0].parameters()),
                "kinds": sorted(kinds)}
    finally:
        destroy_distributed()


def test_every_tensor_on_megatron_device():
    got = spawn_local(_placements, 1)[0]
    assert got["layer_has_ours"] == [True, True]
    assert "ExaoneRMSNorm" in got["kinds"] and got["num_params"] > 10
    assert got["untied has output layer"]
    assert "WindowedSDPACoreAttention" in got["exaone4 kinds"]
    for part in ("norm", "layer", "tied model", "untied model", "exaone4 model"):
        assert got[part] == [], f"{part}: {got[part]}"
