"""Fixed-length training samples from Megatron indexed datasets, as a pure function of index.

Exact resume needs the data position to be a single integer: sample ``i`` of a run is always
the same tokens, whatever the parallel layout and however often the run was interrupted. So
every source here maps an index to ``seq_length + 1`` tokens deterministically (seeded
shuffles per epoch, nothing drawn from global RNG state), and a blend maps a global index to
(component, component index) by Megatron's greedy blending (prefix-stable: the first N
assignments do not depend on how many are built).

Two ways to cut documents into samples:

- ``split``: documents in a shuffled order are concatenated and cut every ``seq_length``
  tokens (consecutive samples share one token, as in Megatron's GPTDataset);
- ``whole``: documents are packed first-fit in order into ``seq_length + 1`` windows and
  never cut, except a document longer than the window on its own (its tail is dropped and
  counted); the rest of a window is padding with loss mask 0. Context-extension stages use
  it so that long documents are seen in one piece.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class Sample:
    tokens: np.ndarray  # int64 [seq_length + 1]
    valid: int  # leading tokens that are real (the rest is padding)


class SampleSource(Protocol):
    seq_length: int

    def sample(self, index: int) -> Sample: ...


def _epoch_rng(seed: int, epoch: int, salt: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, salt])


class IndexedDocuments:
    """The sequences of one Megatron indexed dataset, read lazily (memory-mapped)."""

    def __init__(self, prefix: str) -> None:
        from megatron.core.datasets.indexed_dataset import IndexedDataset

        if not IndexedDataset.exists(prefix):
            raise FileNotFoundError(f"no indexed dataset at {prefix!r} (expected {prefix}.bin "
                                    f"and {prefix}.idx)")
        self.prefix = prefix
        self._dataset = IndexedDataset(prefix)
        self.lengths = np.asarray(self._dataset.sequence_lengths, dtype=np.int64)
        if len(self.lengths) == 0 or self.lengths.sum() < 2:
            raise ValueError(f"indexed dataset {prefix!r} holds no tokens")

    def __len__(self) -> int:
        return len(self.lengths)

    def read(self, doc: int, offset: int = 0, length: int | None = None) -> np.ndarray:
        return np.asarray(self._dataset.get(int(doc), offset=int(offset), length=length),
                          dtype=np.int64)

    @property
    def num_tokens(self) -> int:
        return int(self.lengths.sum())


class SplitDocumentSamples:
    """``split`` mode (see module docstring)."""

    def __init__(self, docs: IndexedDocuments, seq_length: int, seed: int, shuffle: bool = True
                 ) -> None:
        self.docs, self.seq_length, self.seed, self.shuffle = docs, seq_length, seed, shuffle
        self.samples_per_epoch = (docs.num_tokens - 1) // seq_length
        if self.samples_per_epoch < 1:
            raise ValueError(f"{docs.prefix}: {docs.num_tokens} tokens cannot fill one sample of "
                             f"seq_length={seq_length}")

    @functools.lru_cache(maxsize=4)  # noqa: B019 - a few epochs per source, bounded
    def _epoch(self, epoch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n = len(self.docs)
        order = _epoch_rng(self.seed, epoch, 1).permutation(n) if self.shuffle else np.arange(n)
        starts = np.concatenate([[0], np.cumsum(self.docs.lengths[order])])
        samples = np.arange(self.samples_per_epoch)
        if self.shuffle:
            samples = _epoch_rng(self.seed, epoch, 2).permutation(samples)
        return order, starts, samples

    def sample(self, index: int) -> Sample:
        epoch, within = divmod(index, self.samples_per_epoch)
        order, starts, samples = self._epoch(epoch)
        begin = int(samples[within]) * self.seq_length
        end = begin + self.seq_length + 1
        pieces, pos = [], begin
        slot = int(np.searchsorted(starts, begin, side="right")) - 1
        while pos < end:
            doc = order[slot]
            offset = pos - starts[slot]
            take = int(min(self.docs.lengths[doc] - offset, end - pos))
            pieces.append(self.docs.read(doc, offset, take))
            pos += take
            slot += 1
        tokens = np.concatenate(pieces)
        return Sample(tokens=tokens, valid=len(tokens))


class WholeDocumentSamples:
    """``whole`` mode (see module docstring)."""

    def __init__(self, docs: IndexedDocuments, seq_length: int, seed: int, shuffle: bool = True,
                 pad_id: int = 0) -> None:
        self.docs, self.seq_length, self.seed, self.shuffle = docs, seq_length, seed, shuffle
        self.pad_id = pad_id
        self.window = seq_length + 1
        self.truncated_documents = int((docs.lengths > self.window).sum())
        self.samples_per_epoch = len(self._epoch(0)[0])

    @functools.lru_cache(maxsize=4)  # noqa: B019 - a few epochs per source, bounded
    def _epoch(self, epoch: int) -> tuple[list[list[int]], np.ndarray]:
        n = len(self.docs)
        order = _epoch_rng(self.seed, epoch, 1).permutation(n) if self.shuffle else np.arange(n)
        bins: list[list[int]] = []
        current: list[int] = []
        used = 0
        for doc in order.tolist():
            length = min(int(self.docs.lengths[doc]), self.window)
            if current and used + length > self.window:
                bins.append(current)
                current, used = [], 0
            current.append(doc)
            used += length
        if current:
            bins.append(current)
        samples = np.arange(len(bins))
        if self.shuffle:
            samples = _epoch_rng(self.seed, epoch, 2).permutation(samples)
        return bins, samples

    def sample(self, index: int) -> Sample:
        epoch, within = divmod(index, self.samples_per_epoch)
        bins, samples = self._epoch(epoch)
        docs = bins[int(samples[within])]
        pieces = [self.docs.read(d, 0, min(int(self.docs.lengths[d]), self.window)) for d in docs]
        tokens = np.concatenate(pieces)[: self.window]
        valid = len(tokens)
        if valid < self.window:
            tokens = np.concatenate([tokens, np.full(self.window - valid, self.pad_id, np.int64)])
        return Sample(tokens=tokens, valid=valid)


class SyntheticSamples:
    """Learnable arithmetic token sequences (x, x+k, x+2k, ...) mod vocab, seeded per index.

    For tests and benchmarks that must not depend on any corpus.
    """

    def __init__(self, vocab_size: int, seq_length: int, seed: int) -> None:
        self.vocab_size, self.seq_length, self.seed = vocab_size, seq_length, seed

    def sample(self, index: int) -> Sample:
        rng = np.random.default_rng([self.seed, index])
        start, stride = int(rng.integers(0, self.vocab_size)), int(rng.integers(1, 8))
        tokens = (start + stride * np.arange(self.seq_length + 1)) % self.vocab_size
        return Sample(tokens=tokens.astype(np.int64), valid=self.seq_length + 1)


def blending_indices(weights: list[float], size: int) -> tuple[np.ndarray, np.ndarray]:
    """(component, index within component) for global samples 0..size-1.

    Greedy: sample i goes to the component furthest below its target share so far, which is
    what Megatron's ``build_blending_indices`` computes (used when its C++ helper is built).
    """
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    component = np.zeros(size, dtype=np.int16)
    within = np.zeros(size, dtype=np.int64)
    try:
        from megatron.core.datasets import helpers

        helpers.build_blending_indices(component, within, w, len(w), size, False)
        return component, within
    except ImportError:
        pass
    counts = np.zeros(len(w), dtype=np.int64)
    for i in range(size):
        c = int(np.argmax(w * max(i, 1) - counts))
        component[i], within[i] = c, counts[c]
        counts[c] += 1
    return component, within


class BlendedSamples:
    """Weighted mixture of sources (blend and replay components alike)."""

    def __init__(self, sources: list[SampleSource], weights: list[float], seq_length: int
                 ) -> None:
        if len(sources) != len(weights) or not sources:
            raise ValueError("a blend needs one weight per source and at least one source")
        if any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f"blend weights must be >= 0 with a positive sum, got {weights}")
        self.sources, self.weights, self.seq_length = sources, list(weights), seq_length
        self._component = np.zeros(0, dtype=np.int16)
        self._within = np.zeros(0, dtype=np.int64)

    def _ensure(self, size: int) -> None:
        if size > len(self._component):
            grown = max(size, 2 * len(self._component), 1024)
            self._component, self._within = blending_indices(self.weights, grown)

    def sample(self, index: int) -> Sample:
        if len(self.sources) == 1:
            return self.sources[0].sample(index)
        self._ensure(index + 1)
        return self.sources[int(self._component[index])].sample(int(self._within[index]))
