"""Weight-name mappings between Megatron-Core and another layout, declared as data.

A :class:`WeightTable` is a list of typed mappings with ``{i}`` layer placeholders. The same
table drives both directions (``to_megatron`` / ``from_megatron``), so an import and an export
can never disagree. The Megatron side is always the *full* (TP=1, PP=1) parameter, named as in
the Transformer Engine layer spec (which is also the key Megatron's distributed checkpoint
uses); tensor/pipeline sharding happens elsewhere. Another target layout (Llama-HF, TRT-LLM) is
another table over the same mapping types, not another converter.

Shapes are written as tuples of :class:`ModelDims` attribute names (``("q_size",
"hidden_size")``) so that error messages can say which config fields imply a shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

LAYER = "{i}"

ShapeSpec = tuple[str, ...]


@dataclass(frozen=True)
class ModelDims:
    """The sizes a weight table needs, independent of any config file's field names."""

    num_layers: int
    hidden_size: int
    num_attention_heads: int
    num_query_groups: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool

    @property
    def q_size(self) -> int:
        return self.num_attention_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_query_groups * self.head_dim

    @property
    def heads_per_group(self) -> int:
        return self.num_attention_heads // self.num_query_groups

    def shape(self, spec: ShapeSpec) -> tuple[int, ...]:
        return tuple(int(getattr(self, name)) for name in spec)

    def describe(self, spec: ShapeSpec) -> str:
        """``(q_size=64, hidden_size=64)``: a shape with the fields that imply it."""
        return "(" + ", ".join(f"{name}={getattr(self, name)}" for name in spec) + ")"


@dataclass(frozen=True)
class Direct:
    """One target tensor is the Megatron parameter, unchanged.

    ``tied_to``: when the model ties embeddings, this parameter does not exist on its own
    (it *is* the named Megatron parameter) and the target tensor is omitted.
    """

    megatron: str
    target: str
    shape: ShapeSpec
    tied_to: str | None = None

    @property
    def targets(self) -> tuple[str, ...]:
        return (self.target,)

    def target_shapes(self, dims: ModelDims) -> tuple[ShapeSpec, ...]:
        return (self.shape,)

    def to_megatron(self, parts: Sequence[torch.Tensor], dims: ModelDims) -> torch.Tensor:
        return parts[0]

    def from_megatron(self, tensor: torch.Tensor, dims: ModelDims) -> tuple[torch.Tensor, ...]:
        return (tensor,)


@dataclass(frozen=True)
class GroupedQKV:
    """Separate q/k/v projections <-> Megatron's fused ``linear_qkv``.

    Megatron groups rows by KV group: for each group g, [the q heads of g; k_g; v_g]. Tensor
    parallelism then splits whole groups, which is why this layout (not [q; k; v]) is used.
    """

    megatron: str
    q: str
    k: str
    v: str

    @property
    def targets(self) -> tuple[str, ...]:
        return (self.q, self.k, self.v)

    def target_shapes(self, dims: ModelDims) -> tuple[ShapeSpec, ...]:
        return (("q_size", "hidden_size"), ("kv_size", "hidden_size"), ("kv_size", "hidden_size"))

    def to_megatron(self, parts: Sequence[torch.Tensor], dims: ModelDims) -> torch.Tensor:
        q, k, v = parts
        groups, d = dims.num_query_groups, dims.head_dim
        width = q.shape[-1]
        fused = torch.cat([q.reshape(groups, dims.heads_per_group * d, width),
                           k.reshape(groups, d, width), v.reshape(groups, d, width)], dim=1)
        return fused.reshape(-1, width)

    def from_megatron(self, tensor: torch.Tensor, dims: ModelDims) -> tuple[torch.Tensor, ...]:
        groups, d = dims.num_query_groups, dims.head_dim
        width = tensor.shape[-1]
        grouped = tensor.reshape(groups, (dims.heads_per_group + 2) * d, width)
        q, k, v = grouped.split([dims.heads_per_group * d, d, d], dim=1)
        return tuple(t.reshape(-1, width).contiguous() for t in (q, k, v))


@dataclass(frozen=True)
class GatedMLP:
    """Gate and up projections <-> Megatron's ``linear_fc1`` = [gate; up] (rows)."""

    megatron: str
    gate: str
    up: str

    @property
    def targets(self) -> tuple[str, ...]:
        return (self.gate, self.up)

    def target_shapes(self, dims: ModelDims) -> tuple[ShapeSpec, ...]:
        return (("intermediate_size", "hidden_size"),) * 2

    def to_megatron(self, parts: Sequence[torch.Tensor], dims: ModelDims) -> torch.Tensor:
        return torch.cat(list(parts), dim=0)

    def from_megatron(self, tensor: torch.Tensor, dims: ModelDims) -> tuple[torch.Tensor, ...]:
        gate, up = tensor.chunk(2, dim=0)
        return gate.contiguous(), up.contiguous()


Mapping = Direct | GroupedQKV | GatedMLP


@dataclass(frozen=True)
class BoundMapping:
    """A mapping instantiated for one layer (or for none): concrete names and shapes."""

    mapping: Any  # Mapping
    layer: int | None
    megatron: str
    targets: tuple[str, ...]
    target_shapes: tuple[tuple[int, ...], ...]
    shape_specs: tuple[ShapeSpec, ...]

    def to_megatron(self, parts: Sequence[torch.Tensor], dims: ModelDims) -> torch.Tensor:
        return self.mapping.to_megatron(parts, dims)

    def from_megatron(self, tensor: torch.Tensor, dims: ModelDims) -> tuple[torch.Tensor, ...]:
        return self.mapping.from_megatron(tensor, dims)


@dataclass(frozen=True)
class WeightTable:
    """Mappings of one target layout. ``megatron_aliases``: other Megatron spellings of a
    parameter suffix (the local layer spec's unfused norms) -> the canonical (TE) spelling."""

    name: str
    mappings: tuple[Any, ...]
    megatron_aliases: dict[str, str] = field(default_factory=dict)

    def bind(self, dims: ModelDims) -> list[BoundMapping]:
        """Concrete mappings in file order: leading globals, layers 0..L-1, trailing globals."""
        layered = [m for m in self.mappings if LAYER in m.megatron]
        first = next((k for k, m in enumerate(self.mappings) if LAYER in m.megatron),
                     len(self.mappings))
        head = [m for m in self.mappings[:first] if LAYER not in m.megatron]
        tail = [m for m in self.mappings[first:] if LAYER not in m.megatron]
        out = [self._bind(m, None, dims) for m in head]
        out += [self._bind(m, i, dims) for i in range(dims.num_layers) for m in layered]
        out += [self._bind(m, None, dims) for m in tail]
        return [b for b in out if b is not None]

    @staticmethod
    def _bind(mapping: Any, layer: int | None, dims: ModelDims) -> BoundMapping | None:
        if getattr(mapping, "tied_to", None) and dims.tie_word_embeddings:
            return None

        def fill(name: str) -> str:
            return name.replace(LAYER, str(layer)) if layer is not None else name

        specs = mapping.target_shapes(dims)
        return BoundMapping(
            mapping=mapping, layer=layer, megatron=fill(mapping.megatron),
            targets=tuple(fill(t) for t in mapping.targets),
            target_shapes=tuple(dims.shape(s) for s in specs), shape_specs=specs)

    def canonical_megatron_name(self, name: str) -> str:
        """Megatron parameter name in the table's spelling (local-spec norms renamed)."""
        for alias, canonical in self.megatron_aliases.items():
            if name.endswith("." + alias):
                return name[: -len(alias)] + canonical
        return name

    def tied_megatron_names(self) -> dict[str, str]:
        """Megatron parameter -> the parameter it is when embeddings are tied."""
        return {m.megatron: m.tied_to for m in self.mappings if getattr(m, "tied_to", None)}
