"""Choose the transformer layer spec from what the machine has, never from a user flag.

CUDA + Transformer Engine -> Megatron-Core's TE spec (fused norm+linear, FP8 capable).
Otherwise -> Megatron-Core's local spec with :class:`ExaoneRMSNorm` (sequence-parallel capable)
and :class:`SDPACoreAttention` (PyTorch's fused attention instead of explicit softmax).
"""

from __future__ import annotations

from typing import Literal

from nemo_exaone.runtime.features import transformer_engine_available

SpecName = Literal["te", "local"]


def default_spec_name() -> SpecName:
    return "te" if transformer_engine_available() else "local"


def transformer_layer_spec(name: SpecName | None = None):
    """Megatron ``ModuleSpec`` for one EXAONE decoder layer."""
    name = name or default_spec_name()
    if name == "te":
        if not transformer_engine_available():
            raise ValueError("layer spec 'te' needs CUDA and Transformer Engine "
                             "(pip install 'nemo-exaone[gpu]')")
        from megatron.core.models.gpt.gpt_layer_specs import (
            get_gpt_layer_with_transformer_engine_spec,
        )

        return get_gpt_layer_with_transformer_engine_spec()
    if name != "local":
        raise ValueError(f"layer spec {name!r}: choose 'te' or 'local'")
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec

    from nemo_exaone.model.attention import SDPACoreAttention
    from nemo_exaone.model.norm import ExaoneRMSNorm

    spec = get_gpt_layer_local_spec(normalization="RMSNorm")
    spec.submodules.self_attention.submodules.core_attention = SDPACoreAttention
    spec.submodules.input_layernorm = ExaoneRMSNorm
    spec.submodules.pre_mlp_layernorm = ExaoneRMSNorm
    return spec


def decoder_block_spec(config, name: SpecName | None = None, vp_stage: int | None = None):
    """Block spec holding this pipeline stage's layers and the final norm.

    Passing a block (not a layer) spec is how the final norm becomes ours on the local path.
    """
    from megatron.core.transformer.transformer_block import (
        TransformerBlockSubmodules,
        get_num_layers_to_build,
    )

    name = name or default_spec_name()
    layer = transformer_layer_spec(name)
    if name == "te":
        from megatron.core.extensions.transformer_engine import TENorm

        final_norm = TENorm
    else:
        from nemo_exaone.model.norm import ExaoneRMSNorm

        final_norm = ExaoneRMSNorm
    num_layers = get_num_layers_to_build(config, vp_stage=vp_stage)
    return TransformerBlockSubmodules(layer_specs=[layer] * num_layers, layer_norm=final_norm)
