"""The reader and writer of EXAONE 4.0 ``config.json`` files (``model_type: exaone4``).

EXAONE 4.0 is native in transformers (>= 4.54, ``Exaone4Config``); one loader, so a field the
file leaves out means transformers' default. What 4.0 adds over 3.x, and how it is modelled:

* ``sliding_window`` (tokens a local layer sees, itself included: key ``k`` is visible to query
  ``q`` iff ``q - sliding_window < k <= q``) and ``layer_types`` (``sliding_attention`` /
  ``full_attention`` per layer) -> :attr:`ExaoneArch.sliding_window`,
  :attr:`ExaoneArch.layer_types`. ``sliding_window_pattern`` ("LLLG") is carried verbatim and
  checked against ``layer_types``. Without ``layer_types`` (the configs as first published
  had none; transformers issue #39696) the pattern is expanded as the implementations do
  (transformers' ``Exaone4Config`` for integers, TensorRT-LLM's ``check_is_sliding`` for
  letters): letters repeated from layer 0 with the last layer global, an integer n making every
  n-th layer global; a null window or pattern means every layer global. TensorRT-LLM reads the
  pattern, transformers ``layer_types``: a carried pattern must agree with ``layer_types``.
* RoPE applies to a layer iff ``sliding_window`` is null or the layer is a sliding one (so the
  32B's global layers have no position encoding); see :func:`rope_layers`.
* Post-norm and per-head QK-norm have no config field: they are what ``exaone4`` means.

:func:`read_hf_config_any` picks the reader from ``model_type``: the table
:data:`HF_READERS`, not a branch on the name.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

from nemo_exaone.config.hf_config import (
    HFConfigError,
    HFReading,
    _read_rope,
    read_hf_config,
    render_rope,
)

MODEL_TYPE = "exaone4"
SLIDING, FULL = "sliding_attention", "full_attention"

# ExaoneArch field -> the name transformers' Exaone4Config uses.
HF_NAMES: dict[str, str] = {
    "vocab_size": "vocab_size", "hidden_size": "hidden_size", "num_layers": "num_hidden_layers",
    "num_attention_heads": "num_attention_heads", "num_key_value_heads": "num_key_value_heads",
    "head_dim": "head_dim", "intermediate_size": "intermediate_size",
    "max_position_embeddings": "max_position_embeddings",
    "tie_word_embeddings": "tie_word_embeddings", "layer_norm_epsilon": "rms_norm_eps",
    "activation_function": "hidden_act", "bos_token_id": "bos_token_id",
    "eos_token_id": "eos_token_id", "pad_token_id": "pad_token_id",
    "initializer_range": "initializer_range", "attention_dropout": "attention_dropout",
}

# Exaone4Config's defaults (transformers 5.x): what an absent key means.
HF_DEFAULTS: dict[str, Any] = {
    "vocab_size": 102400, "intermediate_size": 16384, "num_key_value_heads": None,
    "max_position_embeddings": 2048, "tie_word_embeddings": False, "layer_norm_epsilon": 1e-5,
    "activation_function": "silu", "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": None,
    "initializer_range": 0.02, "attention_dropout": 0.0, "sliding_window": 4096,
    "sliding_window_pattern": 4,
}

REQUIRED: tuple[str, ...] = ("hidden_size", "num_layers", "num_attention_heads")

# Keys that would change the model: accepted only with the value EXAONE 4.0 has.
NEUTRAL: dict[str, tuple[Any, ...]] = {
    "attention_bias": (False,), "mlp_bias": (False,), "partial_rotary_factor": (1.0, None),
    "quantization_config": (None,), "attn_logit_softcapping": (None,),
    "final_logit_softcapping": (None,), "embed_dropout": (0.0,),
}


def _err(path: str, message: str) -> HFConfigError:
    return HFConfigError(f"{path}: {message}")


def expand_pattern(pattern: Any, num_layers: int, path: str) -> list[str]:
    """``layer_types`` from ``sliding_window_pattern``: "LLLG" repeated from layer 0 with the
    final layer global (TensorRT-LLM), or an integer n, every n-th layer global (transformers);
    0 or null: all global."""
    if pattern in (None, 0):
        return [FULL] * num_layers
    if isinstance(pattern, str):
        if not pattern or set(pattern) - {"L", "G"}:
            raise _err(path, f"sliding_window_pattern={pattern!r}: expected letters L and G")
        kinds = [SLIDING if pattern[i % len(pattern)] == "L" else FULL
                 for i in range(num_layers)]
        return kinds[:-1] + [FULL]
    if isinstance(pattern, int) and not isinstance(pattern, bool) and pattern > 0:
        return [SLIDING if (i + 1) % pattern else FULL for i in range(num_layers)]
    raise _err(path, f"sliding_window_pattern={pattern!r}: expected a string of L/G, a "
                     "non-negative integer or null")


def _check_pattern(pattern: Any, layer_types: list[str], path: str) -> None:
    """A string pattern ("LLLG", repeated from layer 0) must agree with ``layer_types`` (the
    last layer may be global whatever the pattern says)."""
    if not isinstance(pattern, str):
        return
    expanded = expand_pattern(pattern, len(layer_types), path)
    for i, kind in enumerate(layer_types):
        want = SLIDING if pattern[i % len(pattern)] == "L" else FULL
        if kind != want and not (i == len(layer_types) - 1 and kind == expanded[i]):
            raise _err(path, f"layer_types[{i}]={kind!r} disagrees with sliding_window_pattern="
                             f"{pattern!r} (which makes layer {i} {want!r})")


def read_exaone4_config(config: Mapping[str, Any], path: str = "config.json") -> HFReading:
    """Read an ``Exaone4ForCausalLM`` config.json into :class:`ExaoneArch` fields.

    Raises :class:`HFConfigError` naming the field for a missing required field, a pattern that
    disagrees with ``layer_types``, or a model-changing field EXAONE 4.0 does not have.
    """
    if not isinstance(config, Mapping):
        raise _err(path, f"expected a JSON object, got {type(config).__name__}")
    fields: dict[str, Any] = {"model_type": MODEL_TYPE}
    consumed = {"model_type", "sliding_window", "layer_types", "rope_theta", "rope_scaling",
                "rope_parameters"}
    for ours, theirs in HF_NAMES.items():
        consumed.add(theirs)
        if theirs in config:
            fields[ours] = copy.deepcopy(config[theirs])
        elif ours in HF_DEFAULTS:
            fields[ours] = HF_DEFAULTS[ours]
    missing = [HF_NAMES[k] for k in REQUIRED if fields.get(k) is None]
    if missing:
        raise _err(path, f"missing required field(s): {', '.join(missing)}")
    if fields.get("num_key_value_heads") is None:
        fields["num_key_value_heads"] = fields["num_attention_heads"]
    if fields.get("head_dim") is None:
        fields.pop("head_dim", None)
    theta, scaling, rope_fmt = _read_rope(config, path)
    if theta is None:
        raise _err(path, "rope_theta is missing (no RoPE base in rope_theta or "
                         "rope_parameters); state it in config.json")
    fields.update(rope_theta=theta, rope_scaling=scaling)
    window = config.get("sliding_window", HF_DEFAULTS["sliding_window"])
    layer_types = config.get("layer_types")
    pattern = config.get("sliding_window_pattern", HF_DEFAULTS["sliding_window_pattern"])
    if layer_types is None:
        layer_types = expand_pattern(0 if window is None else pattern, fields["num_layers"],
                                     path)
    layer_types = list(layer_types)
    _check_pattern(pattern, layer_types, path)
    fields.update(sliding_window=window, layer_types=tuple(layer_types))
    extra: dict[str, Any] = {}
    for key, value in config.items():
        if key in consumed:
            continue
        if key in NEUTRAL and value not in NEUTRAL[key]:
            raise _err(path, f"{key}={value!r}: EXAONE 4.0 has {key}={NEUTRAL[key][0]!r}; this "
                             "model cannot be built")
        extra[key] = copy.deepcopy(value)
    return HFReading(fields=fields, vintage="exaone4", format={"rope": rope_fmt}, extra=extra)


def render_exaone4_config(arch: Any) -> dict[str, Any]:
    """config.json of an EXAONE 4.0 :class:`ExaoneArch` as ``Exaone4Config`` spells it (every
    modelled field stated, ``layer_types`` included, RoPE in the source's spelling)."""
    out: dict[str, Any] = {"architectures": ["Exaone4ForCausalLM"]}
    out.update(copy.deepcopy(arch.hf_extra))
    out["model_type"] = MODEL_TYPE
    for ours, theirs in HF_NAMES.items():
        out[theirs] = copy.deepcopy(getattr(arch, ours))
    out["sliding_window"] = arch.sliding_window
    out["layer_types"] = list(arch.layer_types)
    if "sliding_window_pattern" not in out and arch.sliding_window is None:
        # Exaone4Config (5.x) expands a missing pattern with the window's default and would
        # divide by zero on a null window; state it.
        out["sliding_window_pattern"] = None
    out.update(render_rope(arch.rope_theta, arch.rope_scaling,
                           arch.hf_format.get("rope", {})))
    return dict(sorted(out.items()))


def rope_layers(sliding_window: int | None, layer_types: tuple[str, ...]) -> list[bool]:
    """Per layer, whether RoPE is applied (``Exaone4Attention``: a null window or a sliding
    layer)."""
    return [sliding_window is None or kind == SLIDING for kind in layer_types]


# model_type -> the reader of its config.json. The 3.x reader is also the fallback: it names
# what it expected for any other model_type.
HF_READERS: dict[str, Callable[[Mapping[str, Any], str], HFReading]] = {
    "exaone": read_hf_config,
    MODEL_TYPE: read_exaone4_config,
}


def read_hf_config_any(config: Mapping[str, Any], path: str = "config.json") -> HFReading:
    """Read a config.json of any supported EXAONE generation (dispatch on ``model_type``)."""
    model_type = config.get("model_type", "exaone") if isinstance(config, Mapping) else None
    return HF_READERS.get(model_type, read_hf_config)(config, path)


# model_type -> the writer of its config.json (3.x: ExaoneArch.to_hf_config's own spelling).
HF_WRITERS: dict[str, Callable[[Any], dict[str, Any]]] = {MODEL_TYPE: render_exaone4_config}


def validate_family(arch: Any) -> None:
    """Reject family fields the model code cannot build, naming the field. Called by
    :meth:`ExaoneArch.validate`; normalises ``layer_types`` to a tuple."""
    if arch.model_type not in HF_READERS:
        raise ValueError(f"model_type={arch.model_type!r} is not supported; choose one of "
                         f"{', '.join(HF_READERS)}")
    if arch.model_type != MODEL_TYPE:
        if arch.sliding_window is not None or arch.layer_types is not None:
            raise ValueError(f"sliding_window={arch.sliding_window!r} / layer_types: only "
                             f"model_type={MODEL_TYPE!r} (EXAONE 4.0) has sliding-window layers")
        return
    if arch.layer_types is None:
        raise ValueError("layer_types is required for model_type='exaone4' (one of "
                         f"{SLIDING!r}/{FULL!r} per layer)")
    arch.layer_types = tuple(arch.layer_types)
    if len(arch.layer_types) != arch.num_layers:
        raise ValueError(f"layer_types has {len(arch.layer_types)} entries but num_layers="
                         f"{arch.num_layers}")
    unknown = sorted(set(arch.layer_types) - {SLIDING, FULL})
    if unknown:
        raise ValueError(f"layer_types: unknown kind(s) {unknown}; expected {SLIDING!r} or "
                         f"{FULL!r}")
    window = arch.sliding_window
    if window is not None and (isinstance(window, bool) or not isinstance(window, int)
                               or window <= 0):
        raise ValueError(f"sliding_window={window!r} must be a positive integer or null")
    if window is None and SLIDING in arch.layer_types:
        raise ValueError(f"layer_types has {SLIDING!r} layers but sliding_window is null")
    # A carried letter pattern is what TensorRT-LLM reads: it must say what layer_types says.
    _check_pattern(arch.hf_extra.get("sliding_window_pattern"), list(arch.layer_types),
                   "sliding_window_pattern (carried in the config)")
