"""Model families by HF ``model_type``: the layer spec and the ``TransformerConfig`` fields each
one needs. The builder asks this table; nothing branches on a model's name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from nemo_exaone.config.presets import ExaoneArch


@dataclass(frozen=True)
class LayerFamily:
    """``block_spec(config, spec_name, vp_stage=)`` -> the stage's block spec;
    ``config_kwargs(arch)`` -> extra ``TransformerConfig`` fields."""

    block_spec: Callable
    config_kwargs: Callable[[ExaoneArch], dict]


def _families() -> dict[str, LayerFamily]:
    from nemo_exaone.model.exaone4 import exaone4_block_spec, exaone4_config_kwargs
    from nemo_exaone.model.spec import decoder_block_spec

    return {
        "exaone": LayerFamily(decoder_block_spec, lambda arch: {}),
        "exaone4": LayerFamily(exaone4_block_spec, exaone4_config_kwargs),
    }


def layer_family(arch: ExaoneArch) -> LayerFamily:
    """The family of ``arch`` (its ``model_type``)."""
    families = _families()
    if arch.model_type not in families:
        raise ValueError(f"model_type={arch.model_type!r} has no layer spec; known: "
                         f"{', '.join(families)}")
    return families[arch.model_type]
