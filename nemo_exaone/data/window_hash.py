"""The window hash of decontamination, in one place: the pool and the scan must agree bit for bit.

For codepoints ``c`` and window length ``S``, the hash of ``c[i : i + S]`` is
``mix(sum_t c[i + t] * B**(S - 1 - t) mod 2**64)`` with an odd base ``B`` and the splitmix64
finalizer ``mix``. With prefix sums ``P[j] = sum_{t < j} c[t] * B**-t`` (``B`` is odd, hence
invertible mod 2**64) it is ``mix((P[i + S] - P[i]) * B**(i + S - 1))``: one pass over the
text gives the hash at any set of starts, or at every start, in O(characters).
"""

from __future__ import annotations

import numpy as np

__all__ = ["FULL_MASK", "BASE", "mix", "powers", "prefix_sums", "hashes_from_prefix", "hashes_at",
           "window_hashes"]

FULL_MASK = (1 << 64) - 1
BASE = 0x9E3779B97F4A7C15  # odd, hence invertible mod 2**64 (needed by the prefix sums)
BASE_INV = pow(BASE, -1, 1 << 64)


def mix(values: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer: spreads a 64-bit value over all 64 bits (in place, returned)."""
    values ^= values >> np.uint64(30)
    values *= np.uint64(0xBF58476D1CE4E5B9)
    values ^= values >> np.uint64(27)
    values *= np.uint64(0x94D049BB133111EB)
    values ^= values >> np.uint64(31)
    return values


def powers(base: int, count: int) -> np.ndarray:
    """``base**i mod 2**64`` for ``i < count``."""
    out = np.full(count, base, dtype=np.uint64)
    out[0] = 1
    with np.errstate(over="ignore"):
        return np.cumprod(out, dtype=np.uint64)  # wraps mod 2**64, as intended


class _Powers:
    """``B**i`` and ``B**-i`` for i < size, grown on demand and kept (one scan after another)."""

    def __init__(self) -> None:
        self.base = self.inverse = np.zeros(0, dtype=np.uint64)

    def get(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        if len(self.base) < size:
            grown = max(size, 2 * len(self.base), 1 << 16)
            self.base, self.inverse = powers(BASE, grown), powers(BASE_INV, grown)
        return self.base, self.inverse


_POWERS = _Powers()


def prefix_sums(codepoints: np.ndarray) -> np.ndarray:
    """``P[j] = sum_{t < j} c[t] * B**-t mod 2**64`` (length ``len(codepoints) + 1``): computed
    once, it gives the hash of any window of ``codepoints`` (:func:`hashes_from_prefix`)."""
    size = len(codepoints)
    _, inverse = _POWERS.get(size + 1)
    prefix = np.empty(size + 1, dtype=np.uint64)
    prefix[0] = 0
    with np.errstate(over="ignore"):
        np.multiply(codepoints, inverse[:size], out=prefix[1:], dtype=np.uint64)
        np.cumsum(prefix[1:], out=prefix[1:])
    return prefix


def hashes_from_prefix(prefix: np.ndarray, starts: np.ndarray | None, window: int) -> np.ndarray:
    """:func:`hashes_at` from the text's :func:`prefix_sums`."""
    size = len(prefix) - 1
    count = size - window + 1 if starts is None else len(starts)
    if count <= 0:
        return np.zeros(0, dtype=np.uint64)
    base, _ = _POWERS.get(size + 1)
    with np.errstate(over="ignore"):
        if starts is None:
            hashes = prefix[window:] - prefix[:count]
            hashes *= base[window - 1: size]
        else:
            ends = starts + window
            hashes = np.take(prefix, ends)
            hashes -= np.take(prefix, starts)
            hashes *= np.take(base, ends - 1)
        return mix(hashes)


def hashes_at(codepoints: np.ndarray, starts: np.ndarray | None, window: int) -> np.ndarray:
    """Hashes of the ``window``-long substrings of ``codepoints`` at ``starts`` (each start
    must leave room for a whole window), or at every start when ``starts`` is None."""
    count = len(codepoints) - window + 1 if starts is None else len(starts)
    if count <= 0:
        return np.zeros(0, dtype=np.uint64)
    return hashes_from_prefix(prefix_sums(codepoints), starts, window)


def window_hashes(codepoints: np.ndarray, window: int) -> np.ndarray:
    """Hashes of every ``window``-long substring (stride 1) of ``codepoints``."""
    return hashes_at(codepoints, None, window)
