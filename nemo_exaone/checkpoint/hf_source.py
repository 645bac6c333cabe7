"""An EXAONE HF checkpoint as a source of full Megatron tensors, validated before use.

Every check runs on headers only (no tensor data), before anything is written: missing,
unexpected and mis-shaped tensors, and a config.json that contradicts the tensors. Each error
names the tensor and the file.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch

from nemo_exaone.checkpoint.errors import CheckpointError
from nemo_exaone.checkpoint.exaone4_hf import hf_table
from nemo_exaone.checkpoint.exaone_hf import exaone_dims
from nemo_exaone.checkpoint.mapping import BoundMapping, WeightTable
from nemo_exaone.checkpoint.metadata import check_same_arch
from nemo_exaone.checkpoint.safetensors_io import SafetensorsSource
from nemo_exaone.config.exaone4_config import read_hf_config_any
from nemo_exaone.config.hf_config import describe_rope
from nemo_exaone.config.presets import ExaoneArch, get_preset

CONFIG_NAME = "config.json"
_LAYER_INDEX = re.compile(r"\.(\d+)\.")


def read_hf_arch(hf_dir: str | os.PathLike, preset: str | None = None) -> ExaoneArch:
    """Architecture from ``config.json``; a preset, when given, must agree with it (or
    stands in for a missing config.json)."""
    path = Path(hf_dir) / CONFIG_NAME
    if not Path(hf_dir).is_dir():
        raise FileNotFoundError(f"HF checkpoint directory {hf_dir} does not exist")
    if not path.exists():
        if preset is None:
            raise FileNotFoundError(f"{path} not found; add it or pass --preset")
        return get_preset(preset)
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: invalid JSON ({exc})") from exc
    arch = ExaoneArch.from_hf_config(config, name=preset or "custom", path=str(path))
    if preset is not None:
        check_same_arch(get_preset(preset), arch, f"{path} (compared with preset {preset!r})")
    return arch


def describe_hf_config(hf_dir: str | os.PathLike, arch: ExaoneArch) -> list[str]:
    """Report lines for an imported config: its vintage, the RoPE (always) and every default
    the reader took for a field the config.json left out."""
    path = Path(hf_dir) / CONFIG_NAME
    lines = []
    if path.exists():
        reading = read_hf_config_any(json.loads(path.read_text()), str(path))
        lines.append(f"config.json vintage: {reading.vintage}")
        lines += reading.notes
    else:
        lines.append(f"no config.json: architecture from preset {arch.name!r}")
    return [describe_rope(arch.rope_theta, arch.rope_scaling)] + lines


class HFSource:
    """Validated HF weights of ``arch``; yields full (TP=1) Megatron tensors per mapping."""

    def __init__(self, hf_dir: str | os.PathLike, arch: ExaoneArch,
                 table: WeightTable | None = None) -> None:
        self.directory = Path(hf_dir)
        self.arch = arch
        self.table = table or hf_table(arch)
        self.dims = exaone_dims(arch)
        self.bound = self.table.bind(self.dims)
        self.weights = SafetensorsSource(hf_dir)
        self._validate()

    def _config_says(self, name: str, missing: bool = False) -> str:
        match = _LAYER_INDEX.search(name)
        if match and int(match[1]) >= self.arch.num_layers:
            return f"config.json says num_layers={self.arch.num_layers}"
        if name == "lm_head.weight":
            return f"config.json says tie_word_embeddings={self.arch.tie_word_embeddings}"
        return (f"the {self.table.name} layout of config.json's architecture needs it"
                if missing else f"not part of the {self.table.name} layout")

    def _validate(self) -> None:
        tensors = self.weights.tensors
        expected = {t: (b, k) for b in self.bound for k, t in enumerate(b.targets)}
        for name in expected:
            if name not in tensors:
                files = sorted({i.file for i in tensors.values()})
                raise CheckpointError(
                    f"tensor {name!r} is missing from {self.directory} "
                    f"(searched {', '.join(files)}); {self._config_says(name, missing=True)}")
        for name, info in tensors.items():
            if name not in expected:
                if self._is_tied_copy(name):
                    continue
                raise CheckpointError(f"unexpected tensor {name!r} in {info.file} "
                                      f"({self._config_says(name)})")
        for name, (bound, k) in expected.items():
            info = tensors[name]
            want = bound.target_shapes[k]
            if info.shape != want:
                raise CheckpointError(
                    f"tensor {name!r} in {info.file} has shape {info.shape}, but config.json "
                    f"implies {self.dims.describe(bound.shape_specs[k])} = {want}")
            if not info.dtype.is_floating_point:
                raise CheckpointError(f"tensor {name!r} in {info.file} has dtype {info.dtype}; "
                                      "expected a floating-point type")
        for bound in self.bound:
            dtypes = {tensors[t].dtype for t in bound.targets}
            if len(dtypes) > 1:
                raise CheckpointError(
                    f"tensors {', '.join(map(repr, bound.targets))} (files "
                    f"{', '.join(sorted({tensors[t].file for t in bound.targets}))}) are fused "
                    f"into one Megatron parameter but have different dtypes {sorted(map(str, dtypes))}")

    def _is_tied_copy(self, name: str) -> bool:
        """A tied checkpoint may still carry lm_head as an exact copy of the embedding."""
        if not self.dims.tie_word_embeddings:
            return False
        for mapping in self.table.mappings:
            tied_to = getattr(mapping, "tied_to", None)
            if tied_to is None or getattr(mapping, "target", None) != name:
                continue
            source = next(b for b in self.bound if b.megatron == tied_to).targets[0]
            pair = self.weights.read([name, source])
            if pair[name].shape == pair[source].shape and torch.equal(pair[name], pair[source]):
                return True
            raise CheckpointError(
                f"tensor {name!r} in {self.weights.tensors[name].file} differs from {source!r}, "
                f"but config.json says tie_word_embeddings=true (the two must be one tensor)")
        return False

    def source_bytes(self, bound: BoundMapping) -> int:
        return self.weights.total_bytes(bound.targets)

    def megatron_tensor(self, bound: BoundMapping) -> torch.Tensor:
        """The full Megatron parameter of ``bound``, built from its HF tensors."""
        parts = self.weights.read(bound.targets)
        return bound.to_megatron([parts[n] for n in bound.targets], self.dims)
