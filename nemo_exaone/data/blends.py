"""Weighted blends of indexed datasets, and replay of the stage-1 mixture in stage 2.

Megatron's ``BlendedDataset`` draws *samples* in proportion to the blend weights; every
sample holds ``seq_length`` tokens, so sample weights are token fractions. Weights left out
are taken from token counts (the sum of the ``.idx`` sequence lengths), i.e. each dataset is
sampled in proportion to its size.

Replay (continued pretraining, EXAONE's stage 2): "new data + p of the stage-1 mixture", by
tokens. With ``replay_fraction = p``, the new sources share ``1 - p`` of the tokens (among
themselves by their weights) and the stage-1 sources share ``p`` (among themselves by their
stage-1 weights)::

    w_new[i] = (1 - p) * a[i] / sum(a)        w_replay[j] = p * b[j] / sum(b)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["BlendConfig", "ResolvedBlend", "resolve_blend", "token_count"]


@dataclass
class BlendConfig:
    """Datasets of a training stage: Megatron prefixes (path without ``.bin``/``.idx``)."""

    prefixes: list[str]
    weights: list[float] | None = None  # None: proportional to token counts
    replay_prefixes: list[str] = field(default_factory=list)  # the stage-1 mixture
    replay_weights: list[float] | None = None  # the stage-1 weights; None: token counts
    replay_fraction: float = 0.0  # p: share of this stage's tokens drawn from stage 1
    split: str = "100,0,0"  # train,valid,test percentages of documents in every prefix

    def __post_init__(self) -> None:
        if not self.prefixes:
            raise ValueError("a blend needs at least one dataset prefix")
        if not 0.0 <= self.replay_fraction < 1.0:
            raise ValueError(f"replay_fraction must be in [0, 1), got {self.replay_fraction}")
        if self.replay_fraction > 0 and not self.replay_prefixes:
            raise ValueError("replay_fraction > 0 needs replay_prefixes (the stage-1 mixture)")
        for name, prefixes, weights in (
            ("weights", self.prefixes, self.weights),
            ("replay_weights", self.replay_prefixes, self.replay_weights),
        ):
            if weights is None:
                continue
            if len(weights) != len(prefixes):
                raise ValueError(f"{name} has {len(weights)} entries for {len(prefixes)} prefixes")
            if any(w < 0 for w in weights) or (prefixes and sum(weights) <= 0):
                raise ValueError(f"{name} must be non-negative with a positive sum")


@dataclass(frozen=True)
class ResolvedBlend:
    """Final Megatron blend: prefixes with normalized weights (summing to 1)."""

    prefixes: list[str]
    weights: list[float]
    token_counts: dict[str, int]

    def as_megatron_blend(self) -> tuple[list[str], list[float]]:
        return list(self.prefixes), list(self.weights)


def token_count(prefix: str | Path) -> int:
    """Number of tokens in the indexed dataset at ``prefix`` (from its ``.idx``)."""
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    prefix = str(prefix)
    if not (Path(prefix + ".bin").is_file() and Path(prefix + ".idx").is_file()):
        raise FileNotFoundError(f"{prefix}: no {prefix}.bin / {prefix}.idx")
    dataset = IndexedDataset(prefix)  # keep it alive: its arrays are views of its mmap
    total = int(dataset.sequence_lengths.sum(dtype="int64"))
    del dataset
    return total


def _normalized(prefixes: list[str], weights: list[float] | None, counts: dict[str, int],
                share: float) -> list[tuple[str, float]]:
    raw = list(weights) if weights is not None else [float(counts[p]) for p in prefixes]
    total = float(sum(raw))
    if total <= 0:
        raise ValueError(f"datasets {prefixes} hold no tokens")
    return [(p, share * w / total) for p, w in zip(prefixes, raw)]


def resolve_blend(config: BlendConfig) -> ResolvedBlend:
    """Turn a :class:`BlendConfig` into final per-prefix weights (see the module doc).

    A prefix listed both as new data and as replay gets the sum of its two weights; prefixes
    whose weight is zero are left out (Megatron rejects zero weights).
    """
    needed = set()
    if config.weights is None:
        needed.update(config.prefixes)
    if config.replay_fraction > 0 and config.replay_weights is None:
        needed.update(config.replay_prefixes)
    counts = {p: token_count(p) for p in sorted(needed)}
    parts = _normalized(config.prefixes, config.weights, counts, 1.0 - config.replay_fraction)
    if config.replay_fraction > 0:
        parts += _normalized(config.replay_prefixes, config.replay_weights, counts,
                             config.replay_fraction)
    merged: dict[str, float] = {}
    for prefix, weight in parts:
        merged[prefix] = merged.get(prefix, 0.0) + weight
    kept = [(p, w) for p, w in merged.items() if w > 0]
    total = sum(w for _, w in kept)
    return ResolvedBlend(
        prefixes=[p for p, _ in kept],
        weights=[w / total for _, w in kept],
        token_counts=counts,
    )
