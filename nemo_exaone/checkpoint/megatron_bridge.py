"""Optional Megatron-Bridge plug-in: ``AutoBridge`` support for EXAONE 3.x (``ExaoneForCausalLM``).

Megatron-Bridge has no EXAONE 3.x bridge. Its weight mappings are built here from the same
:data:`~nemo_exaone.checkpoint.exaone_hf.EXAONE_HF_TABLE` the converter uses, so the two can
never disagree; its configuration is translated by pure functions (testable without Bridge):

* :func:`hf_config_to_arch` reads the HF config through the package's one reader
  (:mod:`nemo_exaone.config.hf_config`): config.json itself when its path is known, else the
  config object as transformers built it. Reading ``config.to_dict()`` as if it were a config.json
  loses the llama3 RoPE scaling under transformers 5 (its ``rope_scaling`` setter stores
  ``rope_parameters``); the reader takes every spelling, LG's remote class and transformers >=
  5.24's native ``exaone`` (Llama field names) alike.
* :func:`provider_kwargs` maps the architecture onto ``GPTModelProvider`` fields.
* :func:`provider_to_hf_config` is Bridge's Megatron -> HF config on export: an EXAONE
  config.json (``model_type: exaone``, LG's field names, which LG's remote code and
  transformers >= 5 both read), never Llama's.

Loaded transformers >= 5.24 models carry Llama names (``model.layers.*``) while files keep
EXAONE's (``transformer.h.*``): :func:`weight_table_for` picks the table for the names the HF
state actually has.

``import megatron.bridge`` needs Python >= 3.12 and Transformer Engine (NGC containers), so
nothing of it is imported until :func:`register_exaone_bridge` is called::

    from nemo_exaone.checkpoint.megatron_bridge import register_exaone_bridge
    register_exaone_bridge()
    bridge = AutoBridge.from_hf_pretrained("LGAI-EXAONE/EXAONE-3.5-2.4B-Instruct",
                                           trust_remote_code=True)
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from nemo_exaone.checkpoint.exaone_hf import (
    EXAONE_HF_TABLE,
    EXAONE_LLAMA_NAMES_TABLE,
    export_hf_config,
)
from nemo_exaone.checkpoint.mapping import LAYER, Direct, GatedMLP, GroupedQKV, WeightTable
from nemo_exaone.config.presets import LLAMA3_ROPE_SCALING_35, ExaoneArch

HF_ARCHITECTURE = "ExaoneForCausalLM"
MODEL_TYPE = "exaone"
_REGISTERED: dict[str, type] = {}
# Attribute of a provider holding the HF config it was built from (written back on export).
PROVIDER_HF_CONFIG = "_nemo_exaone_hf_config"


def hf_config_to_arch(config: Any, config_path: str | os.PathLike | None = None
                      ) -> ExaoneArch:
    """The architecture of an HF EXAONE config: a dict, a transformers config object (LG's
    remote class or transformers >= 5's native one), or the config.json at ``config_path``
    (preferred when it exists: it says what the object's defaults may hide, e.g. a
    ``tie_word_embeddings`` left out, which means tied)."""
    if config_path is not None and Path(config_path).is_file():
        path = Path(config_path)
        return ExaoneArch.from_hf_config(json.loads(path.read_text()), path=str(path))
    if isinstance(config, Mapping):
        return ExaoneArch.from_hf_config(dict(config), path="HF config dict")
    # to_diff_dict() is what save_pretrained writes as config.json (the form the reader knows;
    # no bookkeeping keys); to_dict() where a config class lacks it.
    method = next((m for m in ("to_diff_dict", "to_dict") if hasattr(config, m)), None)
    if method is None:
        raise TypeError(f"cannot read an HF config from {type(config).__name__}")
    return ExaoneArch.from_hf_config(getattr(config, method)(),
                                     path=f"{type(config).__name__}.{method}()")


def config_path_of(hf_pretrained: Any) -> Path | None:
    """config.json of a Bridge ``PreTrainedCausalLM`` (or anything with a local
    ``model_name_or_path``), if it is a local directory."""
    name = getattr(hf_pretrained, "model_name_or_path", None)
    if name is None:
        return None
    path = Path(str(name)) / "config.json"
    return path if path.is_file() else None


def weight_table_for(hf_names: Iterable[str]) -> WeightTable:
    """The weight table whose HF names ``hf_names`` uses: EXAONE's (files) or Llama's
    (transformers >= 5 models in memory)."""
    names = set(hf_names)
    if "model.embed_tokens.weight" in names:
        return EXAONE_LLAMA_NAMES_TABLE
    return EXAONE_HF_TABLE


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

    if arch.model_type != MODEL_TYPE:
        # A GPTModelProvider from these fields would be a pre-norm model without QK-norm,
        # windows or per-layer RoPE: silently another model.
        raise ValueError(
            f"model_type={arch.model_type!r}: this Megatron-Bridge plug-in covers EXAONE 3.x "
            f"({HF_ARCHITECTURE}) only; a {HF_ARCHITECTURE} provider cannot express EXAONE "
            "4.0's post-norm, QK-norm, sliding-window layers or global layers without RoPE. "
            "Convert EXAONE 4.0 with `nemo-exaone convert hf-to-mcore` / `mcore-to-hf`")

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
        attention_dropout=arch.attention_dropout, rope_scaling=arch.rope_scaling is not None)
    if arch.rope_scaling is not None:
        # Megatron-Core's llama3 scaling fixes low/high frequency factors and the original
        # length at EXAONE 3.5's values (ExaoneArch.validate checks them).
        kwargs["rope_scaling_factor"] = arch.rope_scaling_factor
    return kwargs


def provider_to_arch(provider: Any, base: ExaoneArch | None = None) -> ExaoneArch:
    """The architecture a (possibly trained, resized) provider describes, on top of ``base``
    (the HF config it was built from: token ids, spelling and unknown fields kept)."""
    heads = int(provider.num_attention_heads)
    scaling = None
    if getattr(provider, "rope_scaling", False):
        scaling = {**(base.rope_scaling if base and base.rope_scaling else LLAMA3_ROPE_SCALING_35),
                   "factor": float(provider.rope_scaling_factor)}
    fields = dict(
        num_layers=int(provider.num_layers), hidden_size=int(provider.hidden_size),
        num_attention_heads=heads,
        num_key_value_heads=int(getattr(provider, "num_query_groups", None) or heads),
        head_dim=int(getattr(provider, "kv_channels", None) or provider.hidden_size // heads),
        intermediate_size=int(provider.ffn_hidden_size),
        max_position_embeddings=int(provider.seq_length), rope_theta=float(provider.rotary_base),
        rope_scaling=scaling,
        tie_word_embeddings=bool(provider.share_embeddings_and_output_weights),
        vocab_size=int(provider.vocab_size),
        layer_norm_epsilon=float(provider.layernorm_epsilon),
        initializer_range=float(getattr(provider, "init_method_std", 0.02)))
    if base is None:
        return ExaoneArch(**fields)
    if fields["head_dim"] == fields["hidden_size"] // heads and "head_dim" in base.hf_omitted:
        fields.pop("head_dim")
    changed = {k: v for k, v in fields.items() if getattr(base, k) != v}
    return base.replace(**changed) if changed else base


def provider_to_hf_config(provider: Any) -> dict[str, Any]:
    """Bridge's Megatron -> HF config for EXAONE: the source config with what the provider
    changed, in LG's spelling unless the source used another; ``tie_word_embeddings`` stated,
    and no ``auto_map`` (Bridge writes no remote code beside it)."""
    stored = getattr(provider, PROVIDER_HF_CONFIG, None)
    base = ExaoneArch.from_hf_config(stored, path="the provider's HF config") if stored else None
    config, _ = export_hf_config(provider_to_arch(provider, base), present=set())
    config["model_type"] = MODEL_TYPE
    config["architectures"] = [HF_ARCHITECTURE]
    return config


def bridge_provider_kwargs(hf_config: Any, config_path: str | os.PathLike | None = None,
                           dtype: Any = None) -> tuple[dict[str, Any], ExaoneArch]:
    """Everything ``provider_bridge`` sets, from the HF config alone (pure; no Bridge)."""
    import torch

    arch = hf_config_to_arch(hf_config, config_path)
    kwargs = provider_kwargs(arch)
    dtype = dtype or torch.float32
    kwargs.update(params_dtype=dtype, bf16=dtype == torch.bfloat16, fp16=dtype == torch.float16)
    return kwargs, arch


def register_exaone_bridge() -> type:
    """Register (once) and return the Megatron-Bridge class for ``ExaoneForCausalLM``.

    Works with Bridge's older ``provider_bridge`` path (v0.5, v0.6) and main's
    (``hf_config_to_provider_kwargs``, ``megatron_to_hf_config``, ``MODEL_CONFIG_CLASS``).
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

    try:  # Bridge main: model_type makes its export name the config's model_type
        register = MegatronModelBridge.register_bridge(source=HF_ARCHITECTURE, target=GPTModel,
                                                       model_type=MODEL_TYPE)
    except TypeError:  # v0.5 / v0.6
        register = MegatronModelBridge.register_bridge(source=HF_ARCHITECTURE, target=GPTModel)

    class ExaoneBridge(MegatronModelBridge):
        """EXAONE 3.0 / 3.5 (Llama-shaped, other names; llama3 RoPE scaling in 3.5)."""

        # Export writes our dict as config.json, not a transformers class's rendering of it
        # (transformers' own ExaoneConfig would write Llama names LG's remote code cannot read).
        MODEL_CONFIG_CLASS = None

        def _dtype(self, config: Any) -> Any:
            dtype_from_hf = getattr(self, "dtype_from_hf", None)
            return dtype_from_hf(config, default=torch.float32) if dtype_from_hf else \
                torch.float32

        def hf_config_to_provider_kwargs(self, hf_config: Any) -> dict[str, Any]:
            return bridge_provider_kwargs(hf_config, dtype=self._dtype(hf_config))[0]

        def provider_bridge(self, hf_pretrained: Any) -> GPTModelProvider:
            config = hf_pretrained.config
            kwargs, arch = bridge_provider_kwargs(config, config_path_of(hf_pretrained),
                                                  self._dtype(config))
            divisible = getattr(self, "make_vocab_size_divisible_by", None)
            if divisible is not None:
                kwargs["make_vocab_size_divisible_by"] = divisible(arch.vocab_size)
            provider = GPTModelProvider(**kwargs)
            setattr(provider, PROVIDER_HF_CONFIG, arch.to_hf_config())
            state = getattr(hf_pretrained, "state", None)
            keys = getattr(state, "keys", None)
            self._exaone_table = weight_table_for(keys() if callable(keys) else ())
            return provider

        @classmethod
        def megatron_to_hf_config(cls, provider: Any) -> dict:
            return provider_to_hf_config(provider)

        def mapping_registry(self) -> MegatronMappingRegistry:
            table = getattr(self, "_exaone_table", EXAONE_HF_TABLE)
            return MegatronMappingRegistry(*(getattr(param_mapping, kind)(**kwargs)
                                             for kind, kwargs in bridge_mapping_specs(table)))

    ExaoneBridge = register(ExaoneBridge)
    _REGISTERED[HF_ARCHITECTURE] = ExaoneBridge
    return ExaoneBridge
