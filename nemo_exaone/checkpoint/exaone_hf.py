"""The EXAONE 3.x Hugging Face layout (``ExaoneForCausalLM``): the one table both directions use.

EXAONE 3.x is Llama with other names; a Llama-HF or TRT-LLM export is another
:class:`~nemo_exaone.checkpoint.mapping.WeightTable` over the same Megatron names.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path
from typing import Any

from nemo_exaone.checkpoint.mapping import Direct, GatedMLP, GroupedQKV, ModelDims, WeightTable
from nemo_exaone.config.presets import ExaoneArch

EMBEDDING = "embedding.word_embeddings.weight"

EXAONE_HF_TABLE = WeightTable(
    name="exaone-hf",
    mappings=(
        Direct(EMBEDDING, "transformer.wte.weight", ("vocab_size", "hidden_size")),
        Direct("decoder.layers.{i}.self_attention.linear_qkv.layer_norm_weight",
               "transformer.h.{i}.ln_1.weight", ("hidden_size",)),
        GroupedQKV("decoder.layers.{i}.self_attention.linear_qkv.weight",
                   q="transformer.h.{i}.attn.attention.q_proj.weight",
                   k="transformer.h.{i}.attn.attention.k_proj.weight",
                   v="transformer.h.{i}.attn.attention.v_proj.weight"),
        Direct("decoder.layers.{i}.self_attention.linear_proj.weight",
               "transformer.h.{i}.attn.attention.out_proj.weight", ("hidden_size", "q_size")),
        Direct("decoder.layers.{i}.mlp.linear_fc1.layer_norm_weight",
               "transformer.h.{i}.ln_2.weight", ("hidden_size",)),
        GatedMLP("decoder.layers.{i}.mlp.linear_fc1.weight",
                 gate="transformer.h.{i}.mlp.c_fc_0.weight",
                 up="transformer.h.{i}.mlp.c_fc_1.weight"),
        Direct("decoder.layers.{i}.mlp.linear_fc2.weight",
               "transformer.h.{i}.mlp.c_proj.weight", ("hidden_size", "intermediate_size")),
        Direct("decoder.final_layernorm.weight", "transformer.ln_f.weight", ("hidden_size",)),
        # Absent in tied checkpoints (EXAONE 3.5 2.4B): the output layer is the embedding.
        Direct("output_layer.weight", "lm_head.weight", ("vocab_size", "hidden_size"),
               tied_to=EMBEDDING),
    ),
    # Megatron's local layer spec keeps the norms as separate modules; its
    # sharded_state_dict_keys_map renames them to these same fused (TE) names.
    megatron_aliases={
        "input_layernorm.weight": "self_attention.linear_qkv.layer_norm_weight",
        "pre_mlp_layernorm.weight": "mlp.linear_fc1.layer_norm_weight",
    },
)

# LG's own rename of EXAONE 3.x onto Llama names, the one transformers >= 5.24 applies when it
# loads an ``exaone`` checkpoint (its models carry these names in memory; files keep EXAONE's).
LLAMA_RENAMES: tuple[tuple[str, str], ...] = (
    ("transformer.wte.", "model.embed_tokens."), ("transformer.ln_f.", "model.norm."),
    ("transformer.h.", "model.layers."), (".ln_1.", ".input_layernorm."),
    (".ln_2.", ".post_attention_layernorm."), (".attn.attention.", ".self_attn."),
    (".out_proj.", ".o_proj."), (".c_fc_0.", ".gate_proj."), (".c_fc_1.", ".up_proj."),
    (".c_proj.", ".down_proj."),
)


def llama_name(name: str) -> str:
    """The Llama (transformers >= 5 in-memory) name of an EXAONE HF tensor name."""
    for old, new in LLAMA_RENAMES:
        name = name.replace(old, new)
    return name


def _renamed(mapping: Any) -> Any:
    if isinstance(mapping, Direct):
        return dataclasses.replace(mapping, target=llama_name(mapping.target))
    if isinstance(mapping, GroupedQKV):
        return dataclasses.replace(mapping, q=llama_name(mapping.q), k=llama_name(mapping.k),
                                   v=llama_name(mapping.v))
    if isinstance(mapping, GatedMLP):
        return dataclasses.replace(mapping, gate=llama_name(mapping.gate),
                                   up=llama_name(mapping.up))
    raise TypeError(f"no Llama name for {type(mapping).__name__}")


# The same layout under the names a transformers >= 5 model carries once loaded.
EXAONE_LLAMA_NAMES_TABLE = WeightTable(
    name="exaone-hf-llama-names",
    mappings=tuple(_renamed(m) for m in EXAONE_HF_TABLE.mappings),
    megatron_aliases=EXAONE_HF_TABLE.megatron_aliases,
)

# Kept for callers that name the classic tokenizer files; the identity below is the full set.
TOKENIZER_FILES: tuple[str, ...] = (
    "tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt",
    "special_tokens_map.json", "generation_config.json",
)

# --------------------------------------------------------------------------- HF identity
# Everything of an HF model directory that is not weights: config.json (verbatim, unknown keys
# included), generation_config.json, every tokenizer file transformers writes (chat_template.jinja
# and additional_chat_templates/ included) and LG's remote code. Import records it in the
# checkpoint under IDENTITY_DIR; export writes it back.
IDENTITY_DIR = "hf_identity"
_IDENTITY_NAMES = frozenset({
    "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
    "special_tokens_map.json", "added_tokens.json", "chat_template.jinja", "chat_template.json",
    "vocab.json", "vocab.txt", "merges.txt", "tokenizer.model", "spiece.model",
})
_IDENTITY_SUFFIXES = (".py", ".jinja", ".tiktoken")
_IDENTITY_SUBDIRS = ("additional_chat_templates",)


def identity_files(directory: str | os.PathLike) -> list[str]:
    """Relative paths of the identity files in ``directory`` (sorted; no weights)."""
    root = Path(directory)
    out = [p.name for p in root.iterdir()
           if p.is_file() and (p.name in _IDENTITY_NAMES or p.name.endswith(_IDENTITY_SUFFIXES))]
    for sub in _IDENTITY_SUBDIRS:
        if (root / sub).is_dir():
            out += [f"{sub}/{p.name}" for p in (root / sub).iterdir() if p.is_file()]
    return sorted(out)


def tokenizer_files(names: list[str]) -> list[str]:
    """The tokenizer part of an identity file list (what ``--tokenizer`` replaces)."""
    return [n for n in names if n not in ("config.json", "generation_config.json")
            and not n.endswith(".py")]


def copy_identity(source: Path, target: Path, names: list[str]) -> None:
    """Copy ``names`` (relative paths from :func:`identity_files`) from ``source`` to ``target``."""
    for name in names:
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / name, target / name)


def remote_code_modules(auto_map: Any) -> set[str]:
    """Python files (``module.py``) an ``auto_map`` points at (``repo--module.Class`` too)."""
    refs: list[str] = []
    for value in (auto_map or {}).values():
        refs += [v for v in (value if isinstance(value, (list, tuple)) else [value]) if v]
    return {ref.split("--")[-1].rsplit(".", 1)[0] + ".py" for ref in refs}


def export_hf_config(arch: ExaoneArch, present: set[str], dtype_name: str | None = None
                     ) -> tuple[dict[str, Any], list[str]]:
    """config.json for an export directory holding the files ``present``, and what was adjusted.

    Two loaders must read it the same: transformers >= 5 natively and LG's remote code under
    4.4x. So ``tie_word_embeddings`` is always stated (transformers 5 reads its absence as false,
    LG's class as true), and an ``auto_map`` that points at files the directory lacks is dropped
    (it would make ``trust_remote_code`` loading fail).
    """
    config = arch.to_hf_config()
    notes: list[str] = []
    if "tie_word_embeddings" not in config:
        config["tie_word_embeddings"] = arch.tie_word_embeddings
        notes.append(f"tie_word_embeddings: stated as {arch.tie_word_embeddings} (the source left "
                     "it out; transformers >= 5 would read that as false)")
    missing = sorted(m for m in remote_code_modules(config.get("auto_map")) if m not in present)
    if missing:
        config.pop("auto_map")
        notes.append(f"auto_map: dropped (points at {', '.join(missing)}, which the export does "
                     "not have; transformers >= 5 loads EXAONE 3.x natively)")
    if dtype_name is not None:
        key = "dtype" if "dtype" in config and "torch_dtype" not in config else "torch_dtype"
        config[key] = dtype_name
    return dict(sorted(config.items())), notes


def config_changes(source: dict[str, Any], exported: dict[str, Any]) -> list[str]:
    """``key: old -> new`` (added, removed, changed) between two config.json dicts."""
    out = []
    for key in sorted(set(source) | set(exported)):
        if key not in exported:
            out.append(f"{key}: removed (was {source[key]!r})")
        elif key not in source:
            out.append(f"{key}: added {exported[key]!r}")
        elif source[key] != exported[key]:
            out.append(f"{key}: {source[key]!r} -> {exported[key]!r}")
    return out


def exaone_dims(arch: ExaoneArch) -> ModelDims:
    return ModelDims(
        num_layers=arch.num_layers, hidden_size=arch.hidden_size,
        num_attention_heads=arch.num_attention_heads,
        num_query_groups=arch.num_key_value_heads, head_dim=int(arch.head_dim),
        intermediate_size=arch.intermediate_size, vocab_size=arch.vocab_size,
        tie_word_embeddings=bool(arch.tie_word_embeddings))
