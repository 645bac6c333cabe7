"""EXAONE architecture presets: the published HF ``config.json`` files, field for field.

The table is the single source of truth for sizes. ``ExaoneArch`` is what the rest of the
package consumes; :meth:`ExaoneArch.from_hf_config` reads a config.json of any vintage through
:func:`nemo_exaone.config.hf_config.read_hf_config` and :meth:`ExaoneArch.to_hf_config` writes it
back in the same spelling (fields we do not model, such as ``auto_map`` or
``transformers_version``, are carried through untouched).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from nemo_exaone.config.hf_config import (
    SCALAR_FIELDS,
    HFConfigError,
    render_rope,
)

# llama3-style RoPE scaling shared by every EXAONE 3.5 size (HF ``rope_scaling``).
LLAMA3_ROPE_SCALING_35: dict[str, Any] = {
    "factor": 8.0,
    "high_freq_factor": 4.0,
    "low_freq_factor": 1.0,
    "original_max_position_embeddings": 8192,
    "rope_type": "llama3",
}

# LG's remote code, as the published configs point at it (configuration_exaone.py and
# modeling_exaone.py beside the weights).
LG_AUTO_MAP: dict[str, str] = {
    "AutoConfig": "configuration_exaone.ExaoneConfig",
    "AutoModelForCausalLM": "modeling_exaone.ExaoneForCausalLM",
    "AutoModelForSequenceClassification": "modeling_exaone.ExaoneForSequenceClassification",
}

# Keys every published EXAONE 3.x config.json has with the same value.
_PUBLISHED_COMMON: dict[str, Any] = {
    "activation_function": "silu", "architectures": ["ExaoneForCausalLM"],
    "attention_dropout": 0.0, "auto_map": LG_AUTO_MAP, "bos_token_id": 1, "embed_dropout": 0.0,
    "eos_token_id": 361, "initializer_range": 0.02, "layer_norm_epsilon": 1e-05,
    "model_type": "exaone", "pad_token_id": 0, "torch_dtype": "bfloat16", "use_cache": True,
    "vocab_size": 102400,
}

# name -> the config.json as published (LG's ExaoneConfig spelling). ``transformers_version``
# is left out (it names the writer, not the model). The 3.0 config has no ``head_dim``; the
# tied 2.4B config has no ``tie_word_embeddings`` (LG's class omits it when true, and absent
# means tied to every 4.x loader).
PRESET_TABLE: dict[str, dict[str, Any]] = {
    "exaone3.0-7.8b": dict(
        _PUBLISHED_COMMON, num_layers=32, hidden_size=4096, num_attention_heads=32,
        num_key_value_heads=8, intermediate_size=14336, max_position_embeddings=4096,
        rope_theta=500000.0, rope_scaling=None, tie_word_embeddings=False,
    ),
    "exaone3.5-2.4b": dict(
        _PUBLISHED_COMMON, num_layers=30, hidden_size=2560, num_attention_heads=32,
        num_key_value_heads=8, head_dim=80, intermediate_size=7168,
        max_position_embeddings=32768, rope_theta=1000000.0, rope_scaling=LLAMA3_ROPE_SCALING_35,
    ),
    "exaone3.5-7.8b": dict(
        _PUBLISHED_COMMON, num_layers=32, hidden_size=4096, num_attention_heads=32,
        num_key_value_heads=8, head_dim=128, intermediate_size=14336,
        max_position_embeddings=32768, rope_theta=1000000.0, rope_scaling=LLAMA3_ROPE_SCALING_35,
        tie_word_embeddings=False,
    ),
    "exaone3.5-32b": dict(
        _PUBLISHED_COMMON, num_layers=64, hidden_size=5120, num_attention_heads=40,
        num_key_value_heads=8, head_dim=128, intermediate_size=27392,
        max_position_embeddings=32768, rope_theta=1000000.0, rope_scaling=LLAMA3_ROPE_SCALING_35,
        tie_word_embeddings=False,
    ),
    # Debug flavour (ours, no remote code): EXAONE 3.5 layout (GQA, llama3 RoPE scaling, tied
    # embeddings) at a size that trains in seconds on a CPU. Vocab 2048 matches the tiny
    # tokenizer the project trains.
    "tiny": dict(
        {k: v for k, v in _PUBLISHED_COMMON.items() if k not in ("auto_map", "torch_dtype")},
        num_layers=4, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=176, max_position_embeddings=1024, rope_theta=1000000.0,
        rope_scaling=LLAMA3_ROPE_SCALING_35, tie_word_embeddings=True, vocab_size=2048,
    ),
}

# llama3-style RoPE scaling of both EXAONE 4.0 sizes (factor 16 over the same 8192 base).
LLAMA3_ROPE_SCALING_40: dict[str, Any] = dict(LLAMA3_ROPE_SCALING_35, factor=16.0)

# Keys both published EXAONE 4.0 config.json files have with the same value (transformers'
# Exaone4Config spelling; no remote code). Every field was checked against public sources
# (tests/test_exaone4_presets.py pins them):
# - sizes, context, theta, vocab, tying: transformers docs/source/en/model_doc/exaone4.md
#   (model table, written with LG AI Research);
# - 1.2B, all fields (token ids bos 1 / eos 361 / pad 0, head_dim 64, rms_norm_eps 1e-05,
#   llama3 RoPE x16 over 8192, null window and pattern): the config.json as re-saved by
#   transformers 4.57.3 beside quantized copies (github his0si/EXAONE-4.0-1.2B model/config.json,
#   leegongman/lg-exaone-4.0-quantization .../OmniQuant_EXAONE_v4/config.json);
# - 32B, all fields but the pattern (same token ids, head_dim 128, 131072 positions, untied,
#   bfloat16): NVIDIA/TensorRT-LLM tests/unittest/_torch/modeling/test_modeling_exaone4.py,
#   EXAONE4_SINGLE_LAYER_CONFIG (the 32B file, transformers_version 4.54.0.dev0, cut to 4
#   layers and a window of 4 "instead of 4096");
# - pattern: 32B "LLLG", 1.2B null (transformers issue #39696).
# The files as first published had no layer_types; we state them.
_PUBLISHED_COMMON_40: dict[str, Any] = {
    "architectures": ["Exaone4ForCausalLM"], "model_type": "exaone4", "attention_dropout": 0.0,
    "bos_token_id": 1, "eos_token_id": 361, "pad_token_id": 0, "hidden_act": "silu",
    "initializer_range": 0.02, "rms_norm_eps": 1e-05, "rope_theta": 1000000.0,
    "rope_scaling": LLAMA3_ROPE_SCALING_40, "torch_dtype": "bfloat16", "use_cache": True,
    "vocab_size": 102400,
}
_LLLG = ["sliding_attention"] * 3 + ["full_attention"]

PRESET_TABLE.update({
    # Global attention with RoPE in every layer (sliding_window null), tied embeddings.
    "exaone4.0-1.2b": dict(
        _PUBLISHED_COMMON_40, num_hidden_layers=30, hidden_size=2048, num_attention_heads=32,
        num_key_value_heads=8, head_dim=64, intermediate_size=4096,
        max_position_embeddings=65536, tie_word_embeddings=True, sliding_window=None,
        sliding_window_pattern=None, layer_types=["full_attention"] * 30,
    ),
    # Hybrid "LLLG": three 4096-token sliding-window layers with RoPE, one global layer
    # without RoPE.
    "exaone4.0-32b": dict(
        _PUBLISHED_COMMON_40, num_hidden_layers=64, hidden_size=5120, num_attention_heads=40,
        num_key_value_heads=8, head_dim=128, intermediate_size=27392,
        max_position_embeddings=131072, tie_word_embeddings=False, sliding_window=4096,
        sliding_window_pattern="LLLG", layer_types=_LLLG * 16,
    ),
    # Debug flavour of 4.0 (ours): the 32B's layout (hybrid LLLG, QK-norm, post-norm, untied)
    # at CPU size, with a window (16) shorter than the training sequences.
    "tiny4": dict(
        {k: v for k, v in _PUBLISHED_COMMON_40.items() if k != "torch_dtype"},
        num_hidden_layers=4, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
        head_dim=16, intermediate_size=176, max_position_embeddings=1024,
        tie_word_embeddings=False, sliding_window=16, sliding_window_pattern="LLLG",
        layer_types=list(_LLLG), vocab_size=2048,
    ),
})

# Fields that are bookkeeping about the HF spelling, not the architecture.
HF_BOOKKEEPING_FIELDS: tuple[str, ...] = ("name", "hf_extra", "hf_omitted", "hf_format")


@dataclass
class ExaoneArch:
    """Architecture of one EXAONE 3.x model, in HF ``ExaoneConfig`` terms."""

    num_layers: int
    hidden_size: int
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int
    max_position_embeddings: int
    rope_theta: float
    rope_scaling: dict[str, Any] | None = None
    tie_word_embeddings: bool = False
    vocab_size: int = 102400
    head_dim: int | None = None  # None: hidden_size // num_attention_heads (as in HF)
    layer_norm_epsilon: float = 1e-5
    activation_function: str = "silu"
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 361
    pad_token_id: int | None = 0
    initializer_range: float = 0.02
    attention_dropout: float = 0.0
    embed_dropout: float = 0.0
    # The HF model family (``exaone``: 3.x, ``exaone4``: 4.0); picks the config reader, the
    # layer spec and the weight table (see nemo_exaone.config.exaone4_config).
    model_type: str = "exaone"
    # EXAONE 4.0: tokens a sliding layer sees (itself included) and each layer's kind
    # ("sliding_attention" / "full_attention"); None for 3.x.
    sliding_window: int | None = None
    layer_types: tuple[str, ...] | None = None
    name: str = "custom"
    # HF config entries we do not interpret (auto_map, torch_dtype, ...), kept for export.
    hf_extra: dict[str, Any] = field(default_factory=dict)
    # Modelled HF keys that the source config.json did not have (so export omits them too).
    hf_omitted: tuple[str, ...] = ()
    # How the source spelled modelled fields (Llama names, ``rope_parameters``, ...; see
    # :class:`~nemo_exaone.config.hf_config.HFReading`); empty: LG's spelling.
    hf_format: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Reject architectures that the model code cannot build, naming the field."""
        positive = ("num_layers", "hidden_size", "num_attention_heads", "num_key_value_heads",
                    "intermediate_size", "max_position_embeddings", "vocab_size", "head_dim")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name}={value!r} must be a positive integer")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads={self.num_attention_heads} is not divisible by "
                f"num_key_value_heads={self.num_key_value_heads} (GQA needs whole groups)")
        from nemo_exaone.config.exaone4_config import validate_family

        validate_family(self)
        if self.activation_function != "silu":
            raise ValueError(f"activation_function={self.activation_function!r} is not supported:"
                             " EXAONE 3.x uses 'silu' (SwiGLU)")
        if self.rope_scaling is not None:
            rope_type = self.rope_scaling.get("rope_type", self.rope_scaling.get("type"))
            if rope_type != "llama3":
                raise ValueError(f"rope_scaling.rope_type={rope_type!r} is not supported; "
                                 "EXAONE 3.5 uses 'llama3'")
            expected = {k: LLAMA3_ROPE_SCALING_35[k] for k in
                        ("high_freq_factor", "low_freq_factor", "original_max_position_embeddings")}
            for key, want in expected.items():
                if float(self.rope_scaling.get(key, want)) != float(want):
                    raise ValueError(
                        f"rope_scaling.{key}={self.rope_scaling[key]!r}: Megatron-Core's llama3 "
                        f"RoPE scaling is fixed at {key}={want}")

    # ------------------------------------------------------------------ derived
    @property
    def kv_channels(self) -> int:
        return int(self.head_dim)

    @property
    def rope_scaling_factor(self) -> float | None:
        return None if self.rope_scaling is None else float(self.rope_scaling["factor"])

    def replace(self, **changes: Any) -> ExaoneArch:
        """A copy with some fields changed (validated again). A ``head_dim`` the source did not
        state follows ``hidden_size // num_attention_heads`` of the copy, as in HF."""
        if "head_dim" in self.hf_omitted and "head_dim" not in changes:
            changes["head_dim"] = None
        stated = {k for k, v in changes.items() if not (k == "head_dim" and v is None)}
        if "hf_omitted" not in changes:  # a field set explicitly is written explicitly
            changes["hf_omitted"] = tuple(k for k in self.hf_omitted if k not in stated)
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ HF config
    @classmethod
    def from_hf_config(cls, config: dict[str, Any], name: str = "custom",
                       path: str = "config.json") -> ExaoneArch:
        """Build from an HF ``config.json`` dict of an EXAONE 3.x checkpoint, any vintage
        (LG's remote class, transformers 4.x or >= 5); ``path`` names the source in errors."""
        from nemo_exaone.config.exaone4_config import read_hf_config_any

        reading = read_hf_config_any(config, path)
        return cls(name=name, hf_extra=reading.extra, hf_omitted=reading.omitted,
                   hf_format=reading.format, **reading.fields)

    def to_hf_config(self) -> dict[str, Any]:
        """HF ``config.json`` dict (model_type ``exaone``), spelled as the source was (LG's
        spelling for presets), so reading it back gives this architecture exactly."""
        from nemo_exaone.config.exaone4_config import HF_WRITERS

        if self.model_type in HF_WRITERS:
            return HF_WRITERS[self.model_type](self)
        out: dict[str, Any] = {"architectures": ["ExaoneForCausalLM"], "model_type": "exaone"}
        out.update(copy.deepcopy(self.hf_extra))
        for key in SCALAR_FIELDS:
            if key in self.hf_omitted:
                continue
            for spelling in self.hf_format.get(key, [key]):
                out[spelling] = copy.deepcopy(getattr(self, key))
        out.update(render_rope(self.rope_theta, self.rope_scaling, self.hf_format.get("rope", {})))
        return dict(sorted(out.items()))

    def hf_differences(self, other: ExaoneArch) -> list[str]:
        """``field: A != B`` for every modelled field (RoPE and token ids included) that differs."""
        out = []
        for key in SCALAR_FIELDS + ("rope_theta", "rope_scaling", "model_type",
                                    "sliding_window", "layer_types"):
            mine, theirs = getattr(self, key), getattr(other, key)
            if isinstance(mine, float) or isinstance(theirs, float):
                same = mine is not None and theirs is not None and float(mine) == float(theirs)
            else:
                same = mine == theirs
            if not same:
                out.append(f"{key}: {mine!r} != {theirs!r}")
        return out


PRESET_NAMES: tuple[str, ...] = tuple(PRESET_TABLE)


def get_preset(name: str) -> ExaoneArch:
    """The architecture preset called ``name`` (see :data:`PRESET_NAMES`)."""
    if name not in PRESET_TABLE:
        raise ValueError(f"unknown preset {name!r}; choose one of: {', '.join(PRESET_NAMES)}")
    return ExaoneArch.from_hf_config(PRESET_TABLE[name], name=name, path=f"preset {name!r}")


# ExaoneArch fields a user may override (``model.arch.*``): everything but the bookkeeping.
ARCH_FIELD_NAMES: tuple[str, ...] = tuple(f for f in ExaoneArch.__dataclass_fields__
                                          if f not in HF_BOOKKEEPING_FIELDS)
__all__ = ["ARCH_FIELD_NAMES", "HFConfigError", "ExaoneArch", "PRESET_NAMES",
           "PRESET_TABLE", "get_preset"]
