"""Map-style sample sources: sample ``i`` is a pure function of ``i`` (and the config).

Exact resume needs the data position to be one integer, ``consumed_samples``: the loop
reads samples ``[k*G, (k+1)*G)`` at step k, whatever the parallel layout or how often the
run was interrupted. The datasets of :mod:`nemo_exaone.data` (Megatron GPT datasets, whole
-document datasets) already have that property; this module adds what the loop needs on
top of them: a deterministic weighted blend of such datasets (used for whole-document
stages, whose datasets are per prefix) and a synthetic source that needs no corpus.
Every source yields dicts with ``tokens``, ``labels``, ``loss_mask``, ``position_ids``.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

Sample = dict[str, torch.Tensor]


class SampleSource(Protocol):
    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Sample: ...


class SyntheticSamples:
    """Learnable arithmetic token sequences (x, x+k, x+2k, ...) mod vocab, seeded per index.

    For tests and benchmarks that must not depend on any corpus; unbounded in length.
    """

    def __init__(self, vocab_size: int, seq_length: int, seed: int) -> None:
        self.vocab_size, self.seq_length, self.seed = vocab_size, seq_length, seed

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, index: int) -> Sample:
        rng = np.random.default_rng([self.seed, index])
        start, stride = int(rng.integers(0, self.vocab_size)), int(rng.integers(1, 8))
        seq = torch.from_numpy((start + stride * np.arange(self.seq_length + 1))
                               % self.vocab_size).long()
        return {"tokens": seq[:-1], "labels": seq[1:],
                "loss_mask": torch.ones(self.seq_length),
                "position_ids": torch.arange(self.seq_length)}


def blending_indices(weights: list[float], size: int) -> tuple[np.ndarray, np.ndarray]:
    """(component, index within component) for global samples 0..size-1.

    Greedy: sample i goes to the component furthest below its target share so far; this is
    Megatron's ``build_blending_indices`` (its C++ helper, compiled on first use where the
    wheel lacks it). The assignment is prefix-stable: the first N entries do not depend on
    ``size``.
    """
    from nemo_exaone.data.megatron_helpers import ensure_dataset_helpers

    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    component = np.zeros(size, dtype=np.int16)
    within = np.zeros(size, dtype=np.int64)
    ensure_dataset_helpers().build_blending_indices(component, within, w, len(w), size, False)
    return component, within


class BlendedSamples:
    """Weighted mixture of map-style datasets; a component that runs out starts over."""

    def __init__(self, sources: list[SampleSource], weights: list[float]) -> None:
        if len(sources) != len(weights) or not sources:
            raise ValueError("a blend needs one weight per source and at least one source")
        if any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f"blend weights must be >= 0 with a positive sum, got {weights}")
        empty = [i for i, s in enumerate(sources) if len(s) == 0]
        if empty:
            raise ValueError(f"blend component {empty[0]} holds no samples")
        self.sources, self.weights = sources, list(weights)
        self._component = np.zeros(0, dtype=np.int16)
        self._within = np.zeros(0, dtype=np.int64)

    def __len__(self) -> int:
        return 2**62

    def _ensure(self, size: int) -> None:
        if size > len(self._component):
            grown = max(size, 2 * len(self._component), 1024)
            self._component, self._within = blending_indices(self.weights, grown)

    def __getitem__(self, index: int) -> Sample:
        if len(self.sources) == 1:
            source = self.sources[0]
            return source[index % len(source)]
        self._ensure(index + 1)
        source = self.sources[int(self._component[index])]
        return source[int(self._within[index]) % len(source)]
