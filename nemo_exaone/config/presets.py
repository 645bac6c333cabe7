"""EXAONE architecture presets: one table, values as in the published HF ``config.json`` files.

The table is the single source of truth for sizes. ``ExaoneArch`` is what the rest of the
package consumes; :meth:`ExaoneArch.from_hf_config` / :meth:`ExaoneArch.to_hf_config` convert to
and from HF's ``ExaoneConfig`` fields and round-trip them exactly (fields we do not model,
such as ``auto_map`` or ``transformers_version``, are carried through untouched).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any

# llama3-style RoPE scaling shared by every EXAONE 3.5 size (HF ``rope_scaling``).
LLAMA3_ROPE_SCALING_35: dict[str, Any] = {
    "factor": 8.0,
    "high_freq_factor": 4.0,
    "low_freq_factor": 1.0,
    "original_max_position_embeddings": 8192,
    "rope_type": "llama3",
}

# name -> HF config.json architecture fields (only those that differ between sizes).
PRESET_TABLE: dict[str, dict[str, Any]] = {
    "exaone3.0-7.8b": dict(
        num_layers=32, hidden_size=4096, num_attention_heads=32, num_key_value_heads=8,
        intermediate_size=14336, max_position_embeddings=4096, rope_theta=500000.0,
        rope_scaling=None, tie_word_embeddings=False,
    ),
    "exaone3.5-2.4b": dict(
        num_layers=30, hidden_size=2560, num_attention_heads=32, num_key_value_heads=8,
        intermediate_size=7168, max_position_embeddings=32768, rope_theta=1000000.0,
        rope_scaling=LLAMA3_ROPE_SCALING_35, tie_word_embeddings=True,
    ),
    "exaone3.5-7.8b": dict(
        num_layers=32, hidden_size=4096, num_attention_heads=32, num_key_value_heads=8,
        intermediate_size=14336, max_position_embeddings=32768, rope_theta=1000000.0,
        rope_scaling=LLAMA3_ROPE_SCALING_35, tie_word_embeddings=False,
    ),
    "exaone3.5-32b": dict(
        num_layers=64, hidden_size=5120, num_attention_heads=40, num_key_value_heads=8,
        intermediate_size=27392, max_position_embeddings=32768, rope_theta=1000000.0,
        rope_scaling=LLAMA3_ROPE_SCALING_35, tie_word_embeddings=False,
    ),
    # Debug flavour: EXAONE 3.5 layout (GQA, llama3 RoPE scaling, tied embeddings) at a size
    # that trains in seconds on a CPU. Vocab 2048 matches the tiny tokenizer the project trains.
    "tiny": dict(
        num_layers=4, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=176, max_position_embeddings=1024, rope_theta=1000000.0,
        rope_scaling=LLAMA3_ROPE_SCALING_35, tie_word_embeddings=True, vocab_size=2048,
    ),
}

# HF config keys that ExaoneArch models as fields (everything else goes to ``hf_extra``).
_HF_FIELDS = (
    "vocab_size", "hidden_size", "num_layers", "num_attention_heads", "num_key_value_heads",
    "intermediate_size", "max_position_embeddings", "rope_theta", "rope_scaling",
    "tie_word_embeddings", "layer_norm_epsilon", "activation_function", "bos_token_id",
    "eos_token_id", "pad_token_id", "initializer_range", "attention_dropout", "embed_dropout",
)


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
    bos_token_id: int = 1
    eos_token_id: int = 361
    pad_token_id: int = 0
    initializer_range: float = 0.02
    attention_dropout: float = 0.0
    embed_dropout: float = 0.0
    name: str = "custom"
    # HF config entries we do not interpret (auto_map, torch_dtype, ...), kept for export.
    hf_extra: dict[str, Any] = field(default_factory=dict)
    # Modelled HF keys that the source config.json did not have (so export omits them too).
    hf_omitted: tuple[str, ...] = ()

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
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ HF config
    @classmethod
    def from_hf_config(cls, config: dict[str, Any], name: str = "custom") -> ExaoneArch:
        """Build from an HF ``config.json`` dict of an ``ExaoneForCausalLM`` checkpoint."""
        model_type = config.get("model_type", "exaone")
        if model_type != "exaone":
            raise ValueError(f"config.json model_type={model_type!r}: expected 'exaone' "
                             "(EXAONE 3.x); EXAONE 4.0 ('exaone4') is not supported yet")
        missing = [k for k in ("num_layers", "hidden_size", "num_attention_heads",
                               "intermediate_size", "max_position_embeddings") if k not in config]
        if missing:
            raise ValueError(f"config.json is missing required field(s): {', '.join(missing)}")
        kwargs = {k: copy.deepcopy(config[k]) for k in _HF_FIELDS + ("head_dim",) if k in config}
        kwargs.setdefault("num_key_value_heads", config["num_attention_heads"])
        kwargs.setdefault("rope_theta", 10000.0)
        extra = {k: copy.deepcopy(v) for k, v in config.items()
                 if k not in _HF_FIELDS and k != "head_dim"}
        omitted = tuple(k for k in _HF_FIELDS + ("head_dim",) if k not in config)
        return cls(name=name, hf_extra=extra, hf_omitted=omitted, **kwargs)

    def to_hf_config(self) -> dict[str, Any]:
        """HF ``config.json`` dict (``ExaoneForCausalLM``, model_type ``exaone``)."""
        out: dict[str, Any] = {"architectures": ["ExaoneForCausalLM"], "model_type": "exaone"}
        out.update(copy.deepcopy(self.hf_extra))
        for key in _HF_FIELDS + ("head_dim",):
            if key not in self.hf_omitted:
                out[key] = copy.deepcopy(getattr(self, key))
        return dict(sorted(out.items()))


PRESET_NAMES: tuple[str, ...] = tuple(PRESET_TABLE)


def get_preset(name: str) -> ExaoneArch:
    """The architecture preset called ``name`` (see :data:`PRESET_NAMES`)."""
    if name not in PRESET_TABLE:
        raise ValueError(f"unknown preset {name!r}; choose one of: {', '.join(PRESET_NAMES)}")
    return ExaoneArch(name=name, **copy.deepcopy(PRESET_TABLE[name]))
