"""Optional Megatron-Bridge plug-in: ``AutoBridge`` support for EXAONE 3.x (``ExaoneForCausalLM``).

Megatron-Bridge has no EXAONE 3.x bridge. Its weight mappings are built here from the same
:data:`~nemo_exaone.checkpoint.exaone_hf.EXAONE_HF_TABLE` the converter uses, so the two can
never disagree. ``import megatron.bridge`` needs Python >= 3.12 and Transformer Engine (NGC
containers), so nothing is imported until :func:`register_exaone_bridge` is called::

    from nemo_exaone.checkpoint.megatron_bridge import register_exaone_bridge
    register_exaone_bridge()
    bridge = AutoBridge.from_hf_pretrained("LGAI-EXAONE/EXAONE-3.5-2.4B-Instruct",
                                           trust_remote_code=True)
"""

from __future__ import annotations

from typing import Any

from nemo_exaone.checkpoint.exaone_hf import EXAONE_HF_TABLE
from nemo_exaone.checkpoint.mapping import LAYER, Direct, GatedMLP, GroupedQKV, WeightTable
from nemo_exaone.config.presets import ExaoneArch

HF_ARCHITECTURE = "ExaoneForCausalLM"
_REGISTERED: dict[str, type] = {}


def bridge_mapping_specs(table: WeightTable = EXAONE_HF_TABLE) -> list[tuple[str, dict]]:
    """(Bridge mapping class name, keyword arguments) per table entry, ``{i}`` -> ``*``.

    Norms are listed under both Megatron spellings (TE-fused and local spec), as Bridge
    resolves a mapping by the name of the parameter the built model actually has.
    """

    def wild(name: str) -> str:
        return name.replace(LAYER, "*")

    specs: list[tuple[str, dict]] = []
    for m in table.mappings:
        if isinstance(m, Direct):
            names = [m.megatron] + [m.megatron[: -len(canonical)] + alias
                                    for alias, canonical in table.megatron_aliases.items()
                                    if m.megatron.endswith(canonical)]
            specs += [("AutoMapping", dict(megatron_param=wild(n), hf_param=wild(m.target)))
                      for n in names]
        elif isinstance(m, GroupedQKV):
            specs.append(("QKVMapping", dict(megatron_param=wild(m.megatron), q=wild(m.q),
                                             k=wild(m.k), v=wild(m.v))))
        elif isinstance(m, GatedMLP):
            specs.append(("GatedMLPMapping", dict(megatron_param=wild(m.megatron),
                                                  gate=wild(m.gate), up=wild(m.up))))
        else:
            raise TypeError(f"no Megatron-Bridge mapping for {type(m).__name__}")
    return specs


def provider_kwargs(arch: ExaoneArch) -> dict[str, Any]:
    """GPTModelProvider fields for ``arch`` (the same choices as our model builder)."""
    import torch.nn.functional as F

    kwargs: dict[str, Any] = dict(
        num_layers=arch.num_layers, hidden_size=arch.hidden_size,
        ffn_hidden_size=arch.intermediate_size, num_attention_heads=arch.num_attention_heads,
        num_query_groups=arch.num_key_value_heads, kv_channels=arch.kv_channels,
        normalization="RMSNorm", layernorm_epsilon=arch.layer_norm_epsilon,
        activation_func=F.silu, gated_linear_unit=True, add_bias_linear=False,
        add_qkv_bias=False, position_embedding_type="rope", rotary_percent=1.0,
        rotary_base=arch.rope_theta, seq_length=arch.max_position_embeddings,
        vocab_size=arch.vocab_size, share_embeddings_and_output_weights=arch.tie_word_embeddings,
        init_method_std=arch.initializer_range, hidden_dropout=arch.embed_dropout,
        attention_dropout=arch.attention_dropout)
    if arch.rope_scaling is not None:
        kwargs.update(rope_scaling=True, rope_scaling_factor=arch.rope_scaling_factor)
    return kwargs


def register_exaone_bridge() -> type:
    """Register (once) and return the Megatron-Bridge class for ``ExaoneForCausalLM``.

    Raises ImportError where Megatron-Bridge cannot be imported.
    """
    if HF_ARCHITECTURE in _REGISTERED:
        return _REGISTERED[HF_ARCHITECTURE]
    import torch
    from megatron.bridge.models.conversion import param_mapping
    from megatron.bridge.models.conversion.mapping_registry import MegatronMappingRegistry
    from megatron.bridge.models.conversion.model_bridge import MegatronModelBridge
    from megatron.bridge.models.gpt_provider import GPTModelProvider
    from megatron.core.models.gpt import GPTModel

    @MegatronModelBridge.register_bridge(source=HF_ARCHITECTURE, target=GPTModel)
    class ExaoneBridge(MegatronModelBridge):
        """EXAONE 3.0 / 3.5 (Llama-shaped, other names; llama3 RoPE scaling in 3.5)."""

        def provider_bridge(self, hf_pretrained: Any) -> GPTModelProvider:
            config = hf_pretrained.config
            raw = config.to_dict() if hasattr(config, "to_dict") else dict(vars(config))
            arch = ExaoneArch.from_hf_config(raw)
            kwargs = provider_kwargs(arch)
            dtype_from_hf = getattr(self, "dtype_from_hf", None)
            dtype = dtype_from_hf(config, default=torch.float32) if dtype_from_hf else \
                torch.float32
            kwargs.update(params_dtype=dtype, bf16=dtype == torch.bfloat16,
                          fp16=dtype == torch.float16)
            divisible = getattr(self, "make_vocab_size_divisible_by", None)
            if divisible is not None:
                kwargs["make_vocab_size_divisible_by"] = divisible(arch.vocab_size)
            return GPTModelProvider(**kwargs)

        def mapping_registry(self) -> MegatronMappingRegistry:
            return MegatronMappingRegistry(*(getattr(param_mapping, kind)(**kwargs)
                                             for kind, kwargs in bridge_mapping_specs()))

    _REGISTERED[HF_ARCHITECTURE] = ExaoneBridge
    return ExaoneBridge
