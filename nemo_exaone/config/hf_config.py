"""The one reader of HF EXAONE 3.x ``config.json`` files, whatever wrote them.

Three writers produce EXAONE 3.x configs that mean the same model in different words:

* LG's remote ``ExaoneConfig`` (``trust_remote_code``, transformers 4.4x): ``num_layers``,
  ``layer_norm_epsilon``, ``activation_function``, top-level ``rope_theta`` and
  ``rope_scaling``; ``tie_word_embeddings`` is left out when true (PretrainedConfig's 4.x
  default), which is why the tied 2.4B checkpoints in the wild have no such key.
* The same class under transformers 5.0-5.23 (the forms in between): LG's names, a top-level
  ``rope_theta`` beside a ``rope_parameters`` dict; other 4.x tools wrote Llama names with a
  top-level ``rope_theta``/``rope_scaling`` (the scaling sometimes keyed ``type``).
* transformers >= 5.24, where ``exaone`` is native (Llama code, renamed weights):
  ``num_hidden_layers``, ``rms_norm_eps``, ``hidden_act`` and ``rope_parameters`` holding
  ``rope_theta`` and the scaling, possibly nested per layer type (``{"full_attention": {..}}``).

:func:`read_hf_config` maps each onto the same :class:`~nemo_exaone.config.presets.ExaoneArch`
fields and remembers the spelling (:class:`HFReading.format`) so the config can be written back
in the vintage it came in. A field whose absence the two loaders read differently (LG's class and
transformers 5 disagree on the defaults of ``intermediate_size``, ``max_position_embeddings``,
``rope_theta`` and the special token ids) is an error naming it, never a silent default; so is a
field that would change the model but that EXAONE 3.x does not have (``attention_bias: true``, a
sliding window, an unknown RoPE type, ...).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class HFConfigError(ValueError):
    """A config.json that cannot be read as an EXAONE 3.x architecture (names the field)."""


# canonical (LG's) name -> the other spellings writers have used for it.
ALIASES: dict[str, tuple[str, ...]] = {
    "num_layers": ("num_hidden_layers",),
    "layer_norm_epsilon": ("rms_norm_eps",),
    "activation_function": ("hidden_act",),
}

# Modelled scalar fields (besides the RoPE, which has several spellings).
SCALAR_FIELDS: tuple[str, ...] = (
    "vocab_size", "hidden_size", "num_layers", "num_attention_heads", "num_key_value_heads",
    "head_dim", "intermediate_size", "max_position_embeddings", "tie_word_embeddings",
    "layer_norm_epsilon", "activation_function", "bos_token_id", "eos_token_id",
    "pad_token_id", "initializer_range", "attention_dropout", "embed_dropout",
)
ROPE_KEYS: tuple[str, ...] = ("rope_theta", "rope_scaling", "rope_parameters")

# No default: without them the model is unknown.
REQUIRED: tuple[str, ...] = ("hidden_size", "num_layers", "num_attention_heads")

# Absent means different things to LG's class and to transformers 5: (LG's, transformers 5's).
DISPUTED_DEFAULTS: dict[str, tuple[Any, Any]] = {
    "intermediate_size": ("4 * hidden_size", 14336),
    "max_position_embeddings": (2048, 4096),
    "rope_theta": (10000.0, 500000.0),
    "bos_token_id": (0, 1),
    "eos_token_id": (2, 361),
    "pad_token_id": (None, 0),
}

# Absent means the same to every loader.
AGREED_DEFAULTS: dict[str, Any] = {
    "vocab_size": 102400, "layer_norm_epsilon": 1e-5, "activation_function": "silu",
    "initializer_range": 0.02, "attention_dropout": 0.0, "embed_dropout": 0.0,
}

# Keys that would change the model: accepted only with the value EXAONE 3.x has.
NEUTRAL: dict[str, tuple[Any, ...]] = {
    "attention_bias": (False,), "mlp_bias": (False,), "pretraining_tp": (1, None),
    "partial_rotary_factor": (1.0, None), "sliding_window": (None,),
    "use_sliding_window": (False, None), "max_window_layers": (None,),
    "quantization_config": (None,), "attn_logit_softcapping": (None,),
    "final_logit_softcapping": (None,), "logit_scale": (None, 1.0), "pruned_heads": ({}, None),
}

# Vestigial attributes of LG's EXAONE 3.0 remote class (``config.to_dict()`` lists them; its
# modeling code does not read them; a saved config.json leaves them out at these defaults).
# At these values they are carried; any other value has no known meaning and is refused.
LG_LEGACY_DEFAULTS: dict[str, Any] = {
    "rotary_pct": 0.25, "resid_dropout": 0.0, "use_logit_cap": False, "ln_no_scale": False,
    "use_gated": False, "use_emb_norm": False, "use_rotary_pos": False, "rotary_type": None,
    "scaling_factor": 1, "use_absolute_pos": True, "use_extra_logit": True,
    "rotary_expand_length": None, "rotary_base": 10000.0, "use_qkv_fuse": False,
    "rescale_before_lm_head": True,
}

# Words that mark a key as architectural: an unknown key containing one is refused rather than
# carried silently (the model we build would ignore it).
_ARCHITECTURAL_WORDS = (
    "layer", "head", "hidden", "rope", "rotary", "norm", "eps", "vocab", "position", "embed",
    "intermediate", "expert", "window", "attention", "attn", "bias", "activation", "act_",
    "dim", "tie", "mlp", "ffn", "quantiz", "softcap", "logit", "moe",
)
# Known keys (HF bookkeeping, generation, LG's) that contain such a word but change nothing.
_HARMLESS = frozenset({
    "output_hidden_states", "output_attentions", "tie_encoder_decoder", "is_decoder",
    "add_cross_attention", "cross_attention_hidden_size", "num_beam_groups",
    "_attn_implementation", "_attn_implementation_autoset", "_experts_implementation",
    "layer_types", "max_length", "min_length", "no_repeat_ngram_size",
    "encoder_no_repeat_ngram_size", "embedding_size",
})

LLAMA3_KEYS = ("factor", "high_freq_factor", "low_freq_factor", "original_max_position_embeddings")


@dataclass
class HFReading:
    """What :func:`read_hf_config` found: ``fields`` are :class:`ExaoneArch` keyword
    arguments; the rest says how the source spelled them, so it can be written back."""

    fields: dict[str, Any]
    vintage: str  # "lg" | "lg+transformers5" | "llama-names" | "transformers5"
    format: dict[str, Any] = field(default_factory=dict)  # canonical -> source key(s); "rope"
    extra: dict[str, Any] = field(default_factory=dict)  # unmodelled keys, carried verbatim
    omitted: tuple[str, ...] = ()  # modelled keys the source did not have
    notes: list[str] = field(default_factory=list)  # defaults taken and why


def _err(path: str, message: str) -> HFConfigError:
    return HFConfigError(f"{path}: {message}")


def _canonical_llama3(scaling: Mapping[str, Any], where: str, path: str) -> dict[str, Any] | None:
    """A RoPE scaling dict in one spelling (``rope_type``, never ``type``); None for none."""
    scaling = dict(scaling)
    kind = scaling.pop("rope_type", None)
    legacy = scaling.pop("type", None)
    if kind is not None and legacy is not None and kind != legacy:
        raise _err(path, f"{where} says rope_type={kind!r} and type={legacy!r}")
    kind = kind if kind is not None else legacy
    scaling.pop("rope_theta", None)
    if kind in (None, "default") and not scaling:
        return None
    if kind in (None, "default"):
        raise _err(path, f"{where} has scaling fields {sorted(scaling)} but no rope_type")
    if kind != "llama3":
        raise _err(path, f"{where}.rope_type={kind!r} is not supported; EXAONE 3.5 uses "
                         "'llama3' (EXAONE 3.0: none)")
    unknown = sorted(set(scaling) - set(LLAMA3_KEYS))
    if unknown:
        raise _err(path, f"{where}.{unknown[0]} is not a llama3 RoPE scaling field")
    missing = [k for k in LLAMA3_KEYS if k not in scaling]
    if missing:
        raise _err(path, f"{where} (llama3) is missing {', '.join(missing)}")
    return {"rope_type": "llama3", **{k: scaling[k] for k in LLAMA3_KEYS}}


def _read_rope(config: Mapping[str, Any], path: str) -> tuple[float | None, dict | None, dict]:
    """(theta, canonical scaling, format) from every spelling; disagreeing spellings are refused."""
    fmt: dict[str, Any] = {}
    thetas: dict[str, Any] = {}
    scalings: dict[str, Any] = {}
    if "rope_theta" in config:
        fmt["theta"] = "rope_theta"
        if config["rope_theta"] is not None:
            thetas["rope_theta"] = config["rope_theta"]
    if "rope_scaling" in config:
        fmt["scaling"] = "rope_scaling"
        raw = config["rope_scaling"]
        scalings["rope_scaling"] = None if raw is None else _canonical_llama3(
            raw, "rope_scaling", path)
        if isinstance(raw, Mapping) and raw.get("rope_theta") is not None:
            thetas["rope_scaling.rope_theta"] = raw["rope_theta"]
    params = config.get("rope_parameters")
    if params is not None:
        if not isinstance(params, Mapping):
            raise _err(path, f"rope_parameters={params!r} is not a dict")
        nested = bool(params) and all(isinstance(v, Mapping) for v in params.values())
        groups = dict(params) if nested else {"": params}
        if nested:
            fmt["parameters"] = sorted(groups)
            unknown = sorted(set(groups) - {"full_attention"})
            if unknown:
                raise _err(path, f"rope_parameters.{unknown[0]}: EXAONE 3.x has only full "
                                 "attention layers")
        else:
            fmt["parameters"] = "flat"
        for group, value in groups.items():
            where = "rope_parameters" + (f".{group}" if group else "")
            if value.get("rope_theta") is not None:
                thetas[f"{where}.rope_theta"] = value["rope_theta"]
            scalings[where] = _canonical_llama3(value, where, path)
    elif "rope_parameters" in config:
        fmt["parameters"] = "null"
    distinct_theta = {float(v) for v in thetas.values()}
    if len(distinct_theta) > 1:
        raise _err(path, "the RoPE base is stated differently in "
                         + ", ".join(f"{k}={v!r}" for k, v in thetas.items()))
    distinct_scaling = {repr(v) for v in scalings.values()}
    if len(distinct_scaling) > 1:
        raise _err(path, "the RoPE scaling is stated differently in "
                         + ", ".join(f"{k}={v!r}" for k, v in scalings.items()))
    theta = float(next(iter(thetas.values()))) if thetas else None
    scaling = next(iter(scalings.values())) if scalings else None
    fmt["theta_in_parameters"] = any(k.startswith("rope_parameters") for k in thetas)
    return theta, scaling, fmt


def _architectural(key: str) -> bool:
    return key not in _HARMLESS and any(w in key for w in _ARCHITECTURAL_WORDS)


def read_hf_config(config: Mapping[str, Any], path: str = "config.json") -> HFReading:
    """Read an EXAONE 3.x HF config (any vintage) into :class:`ExaoneArch` fields.

    ``path`` names the source in errors. Raises :class:`HFConfigError` naming the field for a
    config that is not EXAONE 3.x, that states a field twice differently, that lacks a field the
    loaders would fill in differently, or that has a model-changing field EXAONE 3.x lacks.
    """
    if not isinstance(config, Mapping):
        raise _err(path, f"expected a JSON object, got {type(config).__name__}")
    model_type = config.get("model_type", "exaone")
    if model_type != "exaone":
        hint = ("the supported EXAONE model types are 'exaone' (3.x) and 'exaone4' (4.0)"
                if str(model_type).startswith("exaone") else "a Llama-renamed EXAONE ('llama') has other weight names; convert "
            "the original EXAONE checkpoint")
        raise _err(path, f"model_type={model_type!r}: expected 'exaone' (EXAONE 3.x); {hint}")
    fields: dict[str, Any] = {}
    fmt: dict[str, Any] = {}
    consumed: set[str] = set()
    for canonical in SCALAR_FIELDS:
        spellings = [k for k in (canonical, *ALIASES.get(canonical, ())) if k in config]
        consumed.update(spellings)
        if not spellings:
            continue
        values = {k: config[k] for k in spellings}
        if len({repr(v) for v in values.values()}) > 1:
            raise _err(path, f"{canonical} is stated differently as "
                             + ", ".join(f"{k}={v!r}" for k, v in values.items()))
        fields[canonical] = copy.deepcopy(values[spellings[0]])
        if spellings != [canonical]:
            fmt[canonical] = spellings
    missing = [k for k in REQUIRED if k not in fields]
    if missing:
        names = [" / ".join((k, *ALIASES.get(k, ()))) for k in missing]
        raise _err(path, f"missing required field(s): {', '.join(names)}")

    theta, scaling, rope_fmt = _read_rope(config, path)
    consumed.update(k for k in ROPE_KEYS if k in config)
    fmt["rope"] = rope_fmt
    fields["rope_theta"] = theta
    fields["rope_scaling"] = scaling

    llama_names = any(k in fmt for k in ALIASES)
    uses_parameters = rope_fmt.get("parameters") not in (None, "null")
    if uses_parameters and not llama_names:
        vintage = "lg+transformers5"
    elif uses_parameters:
        vintage = "transformers5"
    elif llama_names:
        vintage = "llama-names"
    else:
        vintage = "lg"

    notes: list[str] = []
    for key, (lg, tf5) in DISPUTED_DEFAULTS.items():
        if fields.get(key) is None and not (key == "pad_token_id" and key in config):
            raise _err(path, f"{key} is missing{' (no RoPE base anywhere)' if key == 'rope_theta' else ''}"
                             f": LG's ExaoneConfig would read it as {lg}, transformers >= 5 as "
                             f"{tf5}; state it in config.json")
    if "tie_word_embeddings" not in config:
        if vintage == "transformers5":
            raise _err(path, "tie_word_embeddings is missing: transformers >= 5 reads that as "
                             "false, LG's ExaoneConfig as true; state it in config.json")
        fields["tie_word_embeddings"] = True
        notes.append("tie_word_embeddings absent: tied (PretrainedConfig's 4.x default; LG's "
                     "class leaves the key out when true)")
    for key, value in AGREED_DEFAULTS.items():
        if key not in fields:
            fields[key] = value
    if fields.get("num_key_value_heads") is None:
        fields["num_key_value_heads"] = fields["num_attention_heads"]
    if fields.get("head_dim") is None:
        fields.pop("head_dim", None)

    extra: dict[str, Any] = {}
    for key, value in config.items():
        if key in consumed:
            continue
        if key in LG_LEGACY_DEFAULTS:
            if value != LG_LEGACY_DEFAULTS[key]:
                raise _err(path, f"{key}={value!r}: an attribute of LG's EXAONE 3.0 class that "
                                 f"its model ignores only at {LG_LEGACY_DEFAULTS[key]!r}")
        elif key in NEUTRAL:
            if value not in NEUTRAL[key]:
                raise _err(path, f"{key}={value!r}: EXAONE 3.x has "
                                 f"{key}={NEUTRAL[key][0]!r}; this model cannot be built")
        elif key == "layer_types":
            if set(value or ()) - {"full_attention"}:
                raise _err(path, f"layer_types={sorted(set(value))}: EXAONE 3.x has only "
                                 "'full_attention' layers")
        elif _architectural(key):
            raise _err(path, f"unknown field {key}={value!r} looks architectural and cannot "
                             "be placed in the EXAONE 3.x architecture")
        extra[key] = copy.deepcopy(value)
    omitted = tuple(k for k in SCALAR_FIELDS if not any(
        s in config for s in (k, *ALIASES.get(k, ()))))
    return HFReading(fields=fields, vintage=vintage, format=fmt, extra=extra, omitted=omitted,
                     notes=notes)


def render_rope(theta: float, scaling: dict[str, Any] | None, rope_fmt: Mapping[str, Any]
                ) -> dict[str, Any]:
    """The RoPE keys of a config.json in the spelling ``rope_fmt`` recorded (default: LG's
    ``rope_theta`` + ``rope_scaling``, which LG's remote code and transformers 5 both read)."""
    out: dict[str, Any] = {}
    parameters = rope_fmt.get("parameters")
    if "theta" in rope_fmt or parameters in (None, "null"):
        out["rope_theta"] = theta
    if "scaling" in rope_fmt or parameters in (None, "null"):
        out["rope_scaling"] = copy.deepcopy(scaling)
    if parameters == "null":
        out["rope_parameters"] = None
    elif parameters is not None:
        body: dict[str, Any] = {"rope_type": "default"} if scaling is None else copy.deepcopy(
            scaling)
        if rope_fmt.get("theta_in_parameters", True) or "theta" not in rope_fmt:
            body["rope_theta"] = theta
        body = dict(sorted(body.items()))
        out["rope_parameters"] = body if parameters == "flat" else {
            group: copy.deepcopy(body) for group in parameters}
    return out


def describe_rope(theta: float, scaling: Mapping[str, Any] | None) -> str:
    """One line for reports: the base and the scaling, always both."""
    if scaling is None:
        return f"RoPE theta={theta:g}, no scaling"
    return (f"RoPE theta={theta:g}, llama3 scaling factor={scaling['factor']:g} "
            f"(low_freq_factor={scaling['low_freq_factor']:g}, high_freq_factor="
            f"{scaling['high_freq_factor']:g}, original_max_position_embeddings="
            f"{scaling['original_max_position_embeddings']})")
