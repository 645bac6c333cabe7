"""``ExaoneConfig(GPTConfig)``, one config class per preset, and ``ExaoneModel(GPTModel)``.

The EXAONE facts (RMSNorm, SwiGLU, GQA, no biases, RoPE with llama3 scaling, tied embeddings
where the preset ties them) are mapped from :class:`~nemo_exaone.config.presets.ExaoneArch` by
:meth:`ExaoneConfig.from_arch`; the preset classes (``Exaone35Config2_4B``, ...) are generated
from :data:`~nemo_exaone.config.presets.PRESET_TABLE`, never written out again. The layer spec
is our own (:func:`nemo_exaone.model.spec.decoder_block_spec`: Transformer Engine on CUDA, the
local spec with our RMSNorm and SDPA attention otherwise), so ``configure_model`` builds the
same modules, parameter names and numerics as :func:`nemo_exaone.model.builder.build_model`.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from typing import Any

import torch.nn.functional as F
from nemo.collections.llm.gpt.model.base import GPTConfig, GPTModel
from nemo.lightning import OptimizerModule

from nemo_exaone.config.presets import PRESET_TABLE, ExaoneArch, get_preset


def exaone_layer_spec(config: GPTConfig, vp_stage: int | None = None):
    """Our decoder block spec (layers of this pipeline stage + the final norm) for ``config``."""
    from nemo_exaone.model.spec import decoder_block_spec

    return decoder_block_spec(config, vp_stage=vp_stage)


@dataclass
class ExaoneConfig(GPTConfig):
    """EXAONE 3.x in NeMo 2's terms. Sizes come from a preset class or :meth:`from_arch`.

    ``hf_config``: the HF config.json an import started from (fields we do not model, such as
    ``auto_map``, travel through NeMo with it and come back on export).
    """

    normalization: str = "RMSNorm"
    activation_func: Any = F.silu
    gated_linear_unit: bool = True
    position_embedding_type: str = "rope"
    add_bias_linear: bool = False
    add_qkv_bias: bool = False
    hidden_dropout: float = 0.0
    attention_dropout: float = 0.0
    layernorm_epsilon: float = 1e-5
    init_method_std: float = 0.02
    share_embeddings_and_output_weights: bool = False
    bias_activation_fusion: bool = False
    bias_dropout_fusion: bool = False
    apply_rope_fusion: bool = False
    persist_layer_norm: bool = False
    rotary_percent: float = 1.0
    rotary_base: float = 1000000.0
    # llama3-style RoPE scaling as Megatron-Core applies it (low/high frequency factors 1 and
    # 4 over an 8192 original context; ExaoneArch.validate refuses anything else).
    rope_scaling: bool = True
    rope_scaling_factor: float = 8.0
    transformer_layer_spec: Any = exaone_layer_spec
    preset: str | None = None
    hf_config: dict | None = None

    def configure_model(self, tokenizer, pre_process=None, post_process=None, vp_stage=None):
        """NeMo's GPT model build, then RoPE scaling (GPTConfig does not pass it on)."""
        model = super().configure_model(tokenizer, pre_process, post_process, vp_stage)
        rope = getattr(model, "rotary_pos_emb", None)
        if self.rope_scaling and rope is not None:
            rope.inv_freq = rope._apply_scaling(rope.inv_freq, factor=self.rope_scaling_factor)
        return model

    # ------------------------------------------------------------------ ExaoneArch <-> config
    @staticmethod
    def arch_fields(arch: ExaoneArch) -> dict[str, Any]:
        """The GPTConfig fields that express ``arch`` (the one mapping, both directions)."""
        if arch.model_type != "exaone":
            raise ValueError(f"{arch.name}: model_type {arch.model_type!r} is not supported by "
                             "the NeMo 2 model class (EXAONE 3.x, model_type 'exaone', only)")
        theta = float(arch.rope_theta)
        return dict(
            num_layers=arch.num_layers, hidden_size=arch.hidden_size,
            num_attention_heads=arch.num_attention_heads,
            num_query_groups=arch.num_key_value_heads, kv_channels=arch.kv_channels,
            ffn_hidden_size=arch.intermediate_size, vocab_size=arch.vocab_size,
            seq_length=arch.max_position_embeddings,
            layernorm_epsilon=arch.layer_norm_epsilon, init_method_std=arch.initializer_range,
            hidden_dropout=arch.embed_dropout, attention_dropout=arch.attention_dropout,
            share_embeddings_and_output_weights=arch.tie_word_embeddings,
            rotary_base=int(theta) if theta.is_integer() else theta,
            rope_scaling=arch.rope_scaling is not None,
            rope_scaling_factor=arch.rope_scaling_factor or 8.0,
        )

    @classmethod
    def from_arch(cls, arch: ExaoneArch, **overrides: Any) -> ExaoneConfig:
        """A config for ``arch`` (a preset or an HF config.json read by ExaoneArch)."""
        fields = cls.arch_fields(arch)
        fields.update(preset=arch.name if arch.name in PRESET_TABLE else None,
                      hf_config=arch.to_hf_config())
        fields.update(overrides)
        return cls(**fields)

    def to_arch(self) -> ExaoneArch:
        """The ExaoneArch this config describes; HF-only fields from ``hf_config`` (or the
        preset) are kept, modelled fields follow this config."""
        if self.hf_config:
            base = ExaoneArch.from_hf_config(self.hf_config, name=self.preset or "custom")
        elif self.preset:
            base = get_preset(self.preset)
        else:
            base = None
        scaling = None
        if self.rope_scaling:
            recorded = (base.rope_scaling if base is not None else None) or {}
            scaling = dict(recorded or {"high_freq_factor": 4.0, "low_freq_factor": 1.0,
                                        "original_max_position_embeddings": 8192,
                                        "rope_type": "llama3"})
            scaling["factor"] = float(self.rope_scaling_factor)
        fields = dict(
            num_layers=self.num_layers, hidden_size=self.hidden_size,
            num_attention_heads=self.num_attention_heads,
            num_key_value_heads=self.num_query_groups or self.num_attention_heads,
            head_dim=self.kv_channels, intermediate_size=self.ffn_hidden_size,
            vocab_size=self.vocab_size, max_position_embeddings=self.seq_length,
            layer_norm_epsilon=self.layernorm_epsilon, initializer_range=self.init_method_std,
            embed_dropout=self.hidden_dropout, attention_dropout=self.attention_dropout,
            tie_word_embeddings=self.share_embeddings_and_output_weights,
            rope_theta=float(self.rotary_base), rope_scaling=scaling)
        if base is None:
            return ExaoneArch(name="custom", **fields)
        # Only what differs is replaced, so the source's spelling of the rest is kept.
        mine = ExaoneArch(name=base.name, **fields)
        changed = {k: getattr(mine, k) for k in fields
                   if _differs(getattr(mine, k), getattr(base, k))}
        return base.replace(**changed) if changed else base


def _differs(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return a is None or b is None or float(a) != float(b)
    return a != b


def _class_name(preset: str) -> str:
    """``exaone3.5-2.4b`` -> ``Exaone35Config2_4B`` (NeMo's LlamaConfig naming)."""
    if not preset.startswith("exaone"):
        return f"Exaone{preset.capitalize()}Config"
    version, size = preset[len("exaone"):].split("-", 1)
    return f"Exaone{version.replace('.', '')}Config{size.upper().replace('.', '_')}"


def _preset_class(preset: str) -> type[ExaoneConfig]:
    arch = get_preset(preset)
    defaults = dict(ExaoneConfig.arch_fields(arch), preset=preset)
    name = _class_name(preset)
    cls = dataclasses.make_dataclass(
        name, [(k, Any, dataclasses.field(default=v)) for k, v in defaults.items()],
        bases=(ExaoneConfig,), namespace={"__module__": __name__, "__doc__": (
            f"EXAONE preset {preset!r} (generated from nemo_exaone.config.presets).")})
    cls.__qualname__ = name
    return cls


# preset name -> config class, for every EXAONE 3.x preset of the table (4.0 is another family).
PRESET_CONFIGS: dict[str, type[ExaoneConfig]] = {
    name: _preset_class(name) for name, table in PRESET_TABLE.items()
    if table.get("model_type") == "exaone"}
for _cls in PRESET_CONFIGS.values():  # importable by name: fiddle serialises classes so
    setattr(sys.modules[__name__], _cls.__name__, _cls)
del _cls


def config_for_preset(preset: str, **overrides: Any) -> ExaoneConfig:
    """The config of ``preset`` (one of :data:`PRESET_CONFIGS`), fields overridden."""
    if preset not in PRESET_CONFIGS:
        raise ValueError(f"no NeMo 2 config for preset {preset!r}; choose one of: "
                         f"{', '.join(PRESET_CONFIGS)}")
    return PRESET_CONFIGS[preset](**overrides)


class ExaoneModel(GPTModel):
    """NeMo 2's GPT model with an EXAONE config (default: EXAONE 3.5 2.4B)."""

    def __init__(self, config: ExaoneConfig | None = None, optim: OptimizerModule | None = None,
                 tokenizer: Any = None, model_transform: Any = None,
                 model_context_managers: list | None = None) -> None:
        super().__init__(config or PRESET_CONFIGS["exaone3.5-2.4b"](), optim=optim,
                         tokenizer=tokenizer, model_transform=model_transform,
                         model_context_managers=model_context_managers or [])
