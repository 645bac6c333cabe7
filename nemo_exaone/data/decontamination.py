"""Benchmark decontamination, the EXAONE 3.5 way (substring sampling against a window pool).

Method: normalize every test item to alphanumerics only; pool every unique substring of
``window`` (S=50) characters, stride 1; from each normalized training example sample
``samples`` (N=10) windows; the example is contaminated, and removed, if any sampled window
is in the pool.

Choices made here (also in the report's ``params``):

* Normalization = Unicode NFKC, then ``str.casefold()``, then keep only characters that are
  letters or digits in Unicode (``str.isalnum``: Hangul, CJK, accented Latin all count;
  punctuation, spaces and ``_`` are dropped). Case is folded so that re-cased copies of a
  benchmark item ("THE ANSWER IS") are still caught; NFKC maps full-width and compatibility
  forms to their plain letters for the same reason.
* A test item contributes windows from each of its text fields separately (a window never
  spans two fields or two items). Fields shorter than S contribute no window (counted).
* Whole-item matching (on by default; our addition to the published method): a field of at
  least ``min_item_chars`` (20) but fewer than S normalized characters is matched whole: a
  training example whose normalized text contains it anywhere is removed, reported
  separately (``removed_by_whole_item``, ``match: whole_item``). Hangul carries 2-3x the
  content of Latin text per character, so a 43-syllable Korean question has no window and
  would otherwise never be caught. ``min_item_chars=0`` (``--strict-published``) is the
  published method exactly. No sampling here (a sampled window would rarely land on a short
  item): every occurrence is found, through keys taken at the first few offsets of each item
  and looked up at every 9th position of the training text (see :class:`ItemPool`).
* A training example shorter than S after normalization has no window to sample and is
  KEPT (counted as ``kept_shorter_than_window``): by the method's definition it cannot
  contain a test window. One with fewer than N windows has all its windows checked.
* The N windows are drawn by stratified sampling: the example's window starts are cut into
  N equal strata and one start is drawn in each, from a counter-based generator keyed by
  ``xxh3-64(normalized example, seed)``. The windows are distinct and spread over the whole
  example, so a leaked passage that covers at least 1/N of the example's windows is always
  caught (uniform sampling could miss it); the decision depends only on the example's text,
  the seed, S and N, never on its position in the file or the number of workers.
  ``samples=0`` checks every window (exhaustive, slower): then any example containing a
  normalized test substring of S characters is removed.
* The pool is a sorted ``uint64`` array of window hashes (a polynomial hash mod 2**64,
  computed for all test windows at once with prefix sums in numpy, then bit-mixed; one
  implementation, :mod:`nemo_exaone.data.window_hash`, for the pool and the scan) with,
  for each hash, the window's offset into the stored normalized test text. Every hash hit
  is confirmed by comparing the actual characters, so a hash collision can never remove a
  clean example. A bitmap of the hashes' low bits (16 to 32 bits per window, counted in
  the pool's memory) answers most lookups that miss without a binary search.
* The training data is scanned a block (``chunk_bytes``) at a time: parsed, normalized,
  sampled, hashed and looked up with a few passes over the whole block
  (:mod:`nemo_exaone.data.decontamination_fastpath`), with the same results as the
  per-example definitions above (``normalize_text``, ``sampled_window_starts``); the tests
  compare the two on random data.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
import unicodedata
from collections import deque
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import repeat
from pathlib import Path

import numpy as np
import xxhash

from nemo_exaone.data.decontamination_fastpath import (
    char_table,
    kept_lines,
    normalize_batch,
    parse_jsonl_block,
)
from nemo_exaone.data.jsonl import (
    SURROGATE_RE,
    BadRecordError,
    LineBlock,
    SkipStats,
    check_text,
    decode_record,
    get_text,
    iter_line_blocks,
    iter_raw_lines,
    require_file,
)
from nemo_exaone.data.window_hash import (
    FULL_MASK,
    hashes_at,
    hashes_from_prefix,
    mix,
    prefix_sums,
    window_hashes,
)
from nemo_exaone.runtime.outputs import atomic_files, check_output, refuse_overlap

__all__ = [
    "DecontaminationConfig",
    "WindowPool",
    "ItemPool",
    "build_window_pool",
    "decontaminate",
    "normalize_text",
    "window_hashes",
    "sampled_window_starts",
]

_HASH_CHUNK_CHARS = 1 << 21  # bounded temporary memory while hashing the test text


@lru_cache(maxsize=1)
def _alnum_table() -> np.ndarray:
    """``table[codepoint]`` is ``chr(codepoint).isalnum()``, for all of Unicode (1.1 MB)."""
    return np.fromiter((chr(i).isalnum() for i in range(0x110000)), dtype=bool, count=0x110000)


def _codepoints(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


def _fold(text: str) -> str:
    if text.isascii():  # O(1) flag check; NFKC leaves ASCII unchanged
        return text.casefold()
    return unicodedata.normalize("NFKC", text).casefold()


def normalize_codepoints(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Normalize many texts at once: ``(codepoints of all results, start offsets + end)``.

    One encode and one table lookup for the whole batch instead of a regex per text.
    """
    folded = [_fold(text) for text in texts]
    raw = _codepoints("".join(folded))
    keep = _alnum_table()[raw]
    raw_lengths = np.fromiter((len(f) for f in folded), dtype=np.int64, count=len(folded))
    raw_starts = np.cumsum(raw_lengths) - raw_lengths
    # Characters dropped per text, from the (sparse) positions of dropped characters.
    dropped = np.flatnonzero(~keep)
    edges = np.searchsorted(dropped, np.append(raw_starts, len(raw)))
    lengths = raw_lengths - np.diff(edges)
    bounds = np.zeros(len(folded) + 1, dtype=np.int64)
    bounds[1:] = np.cumsum(lengths)
    return raw[keep], bounds


def normalize_text(text: str) -> str:
    """NFKC, case-folded, letters and digits only (see module doc)."""
    codepoints, _ = normalize_codepoints([text])
    return codepoints.astype("<u4").tobytes().decode("utf-32-le")


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _example_keys(codepoints: np.ndarray, bounds: np.ndarray, seed: int) -> np.ndarray:
    """A 64-bit key per example from its normalized text and the seed (xxh3-64)."""
    data = codepoints.astype("<u4", copy=False)
    keys = [
        xxhash.xxh3_64_intdigest(data[a:b].tobytes(), seed=seed & FULL_MASK)
        for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist())
    ]
    return np.asarray(keys, dtype=np.uint64)


def sample_windows(
    lengths: np.ndarray, keys: np.ndarray, window: int, samples: int
) -> tuple[np.ndarray, np.ndarray]:
    """Window starts to check for each example: ``(example_index, start)`` arrays.

    Stratified sampling: the example's ``count = length - window + 1`` window starts are cut
    into ``samples`` equal strata and one start is drawn from each with a counter-based
    generator keyed by the example, so the N windows are distinct, spread over the whole
    example, and reproducible. ``samples == 0`` (or ``count <= samples``) checks every window.
    """
    counts = np.asarray(lengths, dtype=np.int64) - window + 1
    eligible = counts > 0
    exhaustive = eligible & ((counts <= samples) | (samples == 0))
    per_example = np.where(exhaustive, counts, np.where(eligible, samples, 0))
    total = int(per_example.sum())
    # Rows come out grouped by example, in order; within one, by stratum (= by start).
    owner = np.repeat(np.arange(len(counts), dtype=np.int64), per_example)
    rank = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(per_example) - per_example,
                                                        per_example)
    start = rank  # exhaustive: every start in turn
    rows = np.flatnonzero(~exhaustive[owner])
    if len(rows):
        example, stratum = owner[rows], rank[rows]
        count = counts[example]
        low = stratum * count // samples
        width = (stratum + 1) * count // samples - low
        with np.errstate(over="ignore"):
            draws = mix(keys[example] + (stratum.astype(np.uint64) + np.uint64(1)) * _GOLDEN)
        start = start.copy()
        start[rows] = low + (draws % width.astype(np.uint64)).astype(np.int64)
    return owner, start


def sampled_window_starts(text: str, window: int = 50, samples: int = 10, seed: int = 0) -> list[int]:
    """Start offsets (into the normalized text) of the windows checked for one example."""
    codepoints, bounds = normalize_codepoints([text])
    keys = _example_keys(codepoints, bounds, seed)
    _, starts = sample_windows(np.diff(bounds), keys, window, samples)
    return starts.tolist()


# ---- the pools --------------------------------------------------------------------------


def _prefilter(hashes: np.ndarray) -> np.ndarray:
    """Bit i set iff some hash has (hash mod bits) == i, 16 to 32 bits per hash: a lookup that
    misses (nearly all of them) is answered here ~95% of the time, without a binary search."""
    bits = 64
    while bits < 16 * len(hashes):
        bits *= 2
    slots = hashes & np.uint64(bits - 1)
    bit = np.left_shift(1, (slots & np.uint64(7)).astype(np.uint8)).astype(np.uint8)
    prefilter = np.zeros(bits // 8, dtype=np.uint8)
    np.bitwise_or.at(prefilter, slots >> np.uint64(3), bit)  # O(hashes) memory
    return prefilter


def _maybe_present(prefilter: np.ndarray, hashes: np.ndarray) -> np.ndarray:
    """Indices of the ``hashes`` that ``prefilter`` cannot rule out."""
    slots = hashes & np.uint64(len(prefilter) * 8 - 1)
    words = np.take(prefilter, slots >> np.uint64(3))
    words >>= (slots & np.uint64(7)).astype(np.uint8)
    words &= np.uint8(1)
    return np.flatnonzero(words)


_ITEM_KEY_CHARS = 12  # K: length of the keys of whole-item matching (at most min_item_chars)


@dataclass
class ItemPool:
    """Whole-item matching for test fields of ``min_chars`` (min_item_chars) to S-1
    normalized characters, which contribute no window: a training example is contaminated
    if its normalized text contains such a field whole.

    An item is found through a key: the K-character piece at one of its first ``stride``
    offsets (K = ``key_chars``, stride = ``min_chars - K + 1``; every item has all of them).
    An occurrence at position p of the training text contains exactly one position q that
    is a multiple of the stride in ``[p, p + stride)``, and the piece at q is the item's key
    at offset ``q - p``: so only every stride-th position of the training text is hashed
    and looked up (9 times fewer than every position at the default 20 characters), and a
    hit is confirmed character by character over the whole item, inside one example.
    """

    min_chars: int
    key_chars: int
    hashes: np.ndarray  # sorted uint64: hash of each key
    key_offsets: np.ndarray  # int64 offset of each key in its item (< stride)
    rows: np.ndarray  # int64 item (index into ``offsets``/``lengths``) of each key
    offsets: np.ndarray  # int64 start of each distinct item in ``text``
    lengths: np.ndarray  # int64 normalized length of each distinct item
    items: np.ndarray  # int64 test item (index into the WindowPool's item_ids) of each
    text: np.ndarray  # codepoints of the distinct items, concatenated
    prefilter: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.prefilter is None:
            self.prefilter = _prefilter(self.hashes)

    @property
    def stride(self) -> int:
        return self.min_chars - self.key_chars + 1

    def __len__(self) -> int:
        return len(self.offsets)

    @property
    def nbytes(self) -> int:
        arrays = (self.hashes, self.key_offsets, self.rows, self.offsets, self.lengths,
                  self.items, self.text, self.prefilter)
        return int(sum(a.nbytes for a in arrays))

    def find_items(self, codepoints: np.ndarray, starts: np.ndarray, lengths: np.ndarray,
                   prefix: np.ndarray | None = None) -> dict[int, int]:
        """``{example index: distinct item it contains}`` for the examples
        ``codepoints[starts[i]: starts[i] + lengths[i]]`` (in order, back to back). Where an
        example holds several, the one that starts first (then the first in test order).
        ``prefix``: the text's :func:`prefix_sums`, when the caller has them."""
        size, key = len(codepoints), self.key_chars
        if len(self.hashes) == 0 or size < key:
            return {}
        positions = np.arange(0, size - key + 1, self.stride, dtype=np.int64)
        if prefix is None:
            prefix = prefix_sums(codepoints)
        hashes = hashes_from_prefix(prefix, positions, key)
        maybe = _maybe_present(self.prefilter, hashes)
        left = np.searchsorted(self.hashes, hashes[maybe], side="left")
        hit = np.flatnonzero(self.hashes[np.minimum(left, len(self.hashes) - 1)]
                             == hashes[maybe])
        best: dict[int, tuple[int, int]] = {}
        ends = starts + lengths
        for index, row in zip(maybe[hit].tolist(), left[hit].tolist()):
            position, value = int(positions[index]), hashes[index]
            example = int(np.searchsorted(starts, position, side="right")) - 1
            begin, end = int(starts[example]), int(ends[example])
            while row < len(self.hashes) and self.hashes[row] == value:
                item = int(self.rows[row])
                start = position - int(self.key_offsets[row])
                size_ = int(self.lengths[item])
                offset = int(self.offsets[item])
                if (start >= begin and start + size_ <= end
                        and (start, item) < best.get(example, (end, len(self.offsets)))
                        and np.array_equal(codepoints[start: start + size_],
                                           self.text[offset: offset + size_])):
                    best[example] = (start, item)
                row += 1
        return {example: item for example, (_, item) in best.items()}

    def describe(self, item: int) -> tuple[int, str]:
        """``(test item index, normalized item text)`` of a distinct item."""
        offset, size = int(self.offsets[item]), int(self.lengths[item])
        text = self.text[offset: offset + size].astype("<u4").tobytes().decode("utf-32-le")
        return int(self.items[item]), text


def build_item_pool(codepoints: np.ndarray, bounds: np.ndarray, field_item: np.ndarray,
                    min_chars: int, window: int) -> ItemPool:
    """The :class:`ItemPool` of the normalized fields (``codepoints[bounds[i]:bounds[i+1]]``)
    whose length is in ``[min_chars, window)``; identical fields are stored once (the first,
    in test order)."""
    lengths = np.diff(bounds)
    chosen = np.flatnonzero((lengths >= min_chars) & (lengths < window))
    seen: set[bytes] = set()
    keep: list[int] = []
    for index in chosen.tolist():
        content = codepoints[bounds[index]: bounds[index + 1]].tobytes()
        if content not in seen:
            seen.add(content)
            keep.append(index)
    kept = np.asarray(keep, dtype=np.int64)
    item_lengths = lengths[kept].astype(np.int64)
    offsets = np.zeros(len(kept), dtype=np.int64)
    key = min(_ITEM_KEY_CHARS, min_chars)
    stride = min_chars - key + 1
    if len(kept):
        offsets[1:] = np.cumsum(item_lengths)[:-1]
        text = np.concatenate([codepoints[bounds[i]: bounds[i + 1]] for i in keep])
    else:
        text = np.zeros(0, dtype=np.uint32)
    # keys at offsets 0 .. stride-1 of every item (item-major, so ties keep test order)
    rows = np.repeat(np.arange(len(kept), dtype=np.int64), stride)
    key_offsets = np.tile(np.arange(stride, dtype=np.int64), len(kept))
    hashes = hashes_at(text, offsets[rows] + key_offsets, key)
    order = np.argsort(hashes, kind="stable")
    return ItemPool(min_chars=min_chars, key_chars=key, hashes=hashes[order],
                    key_offsets=key_offsets[order], rows=rows[order], offsets=offsets,
                    lengths=item_lengths, items=field_item[kept], text=text.astype(np.uint32))


@dataclass
class WindowPool:
    """Every unique normalized test window, stored as hashes + offsets into the test text."""

    window: int
    hashes: np.ndarray  # sorted uint64 (masked by hash_mask)
    offsets: np.ndarray  # uint32/uint64 start of each window in ``text``
    text: np.ndarray  # codepoints of all normalized test fields, concatenated
    segment_starts: np.ndarray  # int64 start of each field in ``text``
    segment_item: np.ndarray  # int64 item index of each field
    item_ids: list  # id of each item (its "id" value, else "<file>:<line>")
    item_set: np.ndarray  # int32 test-set index of each item
    set_names: list[str]
    hash_mask: int = FULL_MASK
    stats: dict = field(default_factory=dict)
    # Bit i set iff some pool hash has (hash mod len(prefilter) * 8) == i; built from
    # ``hashes`` when not given. 16 to 32 bits per window: a lookup that misses the pool
    # (nearly all of them) is answered here ~95% of the time, without a binary search.
    prefilter: np.ndarray | None = None

    # Test fields too short for a window, matched whole (None: strict published method).
    items: ItemPool | None = None

    def __post_init__(self) -> None:
        if self.prefilter is None:
            self.prefilter = _prefilter(self.hashes)

    @property
    def nbytes(self) -> int:
        arrays = (self.hashes, self.offsets, self.text, self.segment_starts, self.segment_item,
                  self.item_set, self.prefilter)
        items = self.items.nbytes if self.items is not None else 0
        return int(sum(a.nbytes for a in arrays)) + items

    def __len__(self) -> int:
        return len(self.hashes)

    def find_hits(
        self, codepoints: np.ndarray, starts: np.ndarray, hashes: np.ndarray | None = None
    ) -> tuple[list[int], list[int]]:
        """The confirmed matches among the windows at ``starts``: ``(indices into starts,
        window offsets in the pool text)``, indices increasing. Hash hits whose characters
        differ (collisions) are not matches. ``hashes`` (unmasked) may be given when the
        caller already computed them."""
        if len(starts) == 0 or len(self.hashes) == 0:
            return [], []
        if hashes is None:
            hashes = hashes_at(codepoints, starts, self.window)
        if self.hash_mask != FULL_MASK:
            hashes = hashes & np.uint64(self.hash_mask)
        maybe = _maybe_present(self.prefilter, hashes)
        # sorted queries walk the pool in order: far fewer cache misses
        order = maybe[np.argsort(hashes[maybe])]
        ordered = hashes[order]
        left_sorted = np.searchsorted(self.hashes, ordered, side="left")
        inside = np.minimum(left_sorted, len(self.hashes) - 1)
        hit_sorted = np.flatnonzero(self.hashes[inside] == ordered)
        if len(hit_sorted) == 0:
            return [], []
        candidates = order[hit_sorted]
        left = left_sorted[hit_sorted]
        right = np.searchsorted(self.hashes, ordered[hit_sorted], side="right")
        ranking = np.argsort(candidates)
        candidates, left, right = candidates[ranking], left[ranking], right[ranking]
        span = np.arange(self.window)
        # Confirm against the first pool window of equal hash, many candidates at once ...
        first = self.offsets[left].astype(np.int64)
        ours = starts[candidates]
        equal = np.empty(len(candidates), dtype=bool)
        for begin in range(0, len(candidates), 1 << 13):  # bounded temporaries
            rows = slice(begin, begin + (1 << 13))
            equal[rows] = (self.text[first[rows, None] + span]
                           == codepoints[ours[rows, None] + span]).all(axis=1)
        matched = first.copy()
        # ... and, where that one differs and others share the hash, against each of them.
        for row in np.flatnonzero(~equal & (right - left > 1)).tolist():
            k = candidates[row]
            candidate = codepoints[starts[k]: starts[k] + self.window]
            offsets = self.offsets[left[row] + 1: right[row]].astype(np.int64)
            same = (self.text[offsets[:, None] + span] == candidate).all(axis=1)
            if same.any():
                equal[row] = True
                matched[row] = offsets[np.argmax(same)]
        indices = candidates[equal].tolist()
        offsets_found = matched[equal].tolist()
        return indices, offsets_found

    def describe_match(self, offset: int) -> tuple[int, object, str]:
        """``(test_set_index, test_item_id, window_text)`` of a pool window offset."""
        segment = int(np.searchsorted(self.segment_starts, offset, side="right")) - 1
        item = int(self.segment_item[segment])
        window_text = self.text[offset: offset + self.window].astype("<u4").tobytes()
        return int(self.item_set[item]), self.item_ids[item], window_text.decode("utf-32-le")


def _record_name(value: object, fallback: str) -> object:
    """A record's id for the report: its id value if it is an int or a string of text."""
    if isinstance(value, int) or (isinstance(value, str) and not SURROGATE_RE.search(value)):
        return value
    return fallback


def _read_test_items(path: str, keys: list[str], id_key: str, skip: SkipStats | None):
    items = 0
    for line_no, raw in iter_raw_lines(path):
        try:
            record = decode_record(raw, path, line_no)
            fields: list[str] = []
            for key in keys:
                value = record.get(key)
                if isinstance(value, list) and all(isinstance(v, str) for v in value):
                    for index, option in enumerate(value):  # e.g. multiple-choice options
                        fields.append(check_text(option, f"{key}[{index}]", path, line_no))
                else:
                    fields.append(get_text(record, key, path, line_no))
        except BadRecordError as err:
            if skip is None:
                raise
            skip.add(str(err))
            continue
        items += 1
        yield _record_name(record.get(id_key), f"{path}:{line_no}"), fields
    if items == 0:
        raise ValueError(f"{path}: empty test set (no usable items"
                         + (", every line was bad)" if skip is not None and skip.skipped
                            else ")") + "; a test set with nothing in it decontaminates "
                         "nothing: check the path and --test-key")


def build_window_pool(
    test_paths: list[str],
    keys: list[str],
    window: int = 50,
    id_key: str = "id",
    hash_mask: int = FULL_MASK,
    skip: SkipStats | None = None,
    min_item_chars: int = 20,
) -> WindowPool:
    """Read, normalize and hash every test set into a :class:`WindowPool`.

    Fields of ``min_item_chars`` to ``window - 1`` normalized characters go to its
    :class:`ItemPool` (whole-item matching; ``min_item_chars=0``: none, the published
    method). ``hash_mask`` exists for tests: a tiny mask forces hash collisions, which
    exact confirmation must absorb.
    """
    if window < 1:
        raise ValueError("window must be >= 1")
    if min_item_chars < 0:
        raise ValueError("min_item_chars must be >= 0 (0: no whole-item matching)")
    fields: list[str] = []
    field_item: list[int] = []
    item_ids: list = []
    item_set: list[int] = []
    for set_index, path in enumerate(test_paths):
        for item_id, item_fields in _read_test_items(path, keys, id_key, skip):
            fields.extend(item_fields)
            field_item.extend([len(item_ids)] * len(item_fields))
            item_ids.append(item_id)
            item_set.append(set_index)
    codepoints, bounds = normalize_codepoints(fields)
    lengths = np.diff(bounds)
    long_enough = lengths >= window
    short_fields = int((~long_enough).sum())
    items = None
    if min_item_chars > 0:
        items = build_item_pool(codepoints, bounds, np.asarray(field_item, dtype=np.int64),
                                min_item_chars, window)
    whole_fields = int(((lengths >= min_item_chars) & ~long_enough).sum()) if items else 0
    text = codepoints[np.repeat(long_enough, lengths)]  # fields shorter than S are dropped
    kept_lengths = lengths[long_enough]
    starts = np.zeros(len(kept_lengths) + 1, dtype=np.int64)
    np.cumsum(kept_lengths, out=starts[1:])
    segment_item = np.asarray(field_item, dtype=np.int64)[long_enough]
    segment_starts = starts[:-1]
    length = int(starts[-1])
    all_hashes: list[np.ndarray] = []
    all_offsets: list[np.ndarray] = []
    segment = 0
    while segment < len(segment_starts):  # hash groups of whole fields, ~2M chars at a time
        last = segment + 1
        while last < len(segment_starts) and starts[last + 1] - starts[segment] <= _HASH_CHUNK_CHARS:
            last += 1
        begin, end = int(starts[segment]), int(starts[last])
        hashes = window_hashes(text[begin:end], window)
        local = np.arange(len(hashes), dtype=np.int64) + begin
        owner = np.searchsorted(starts, local, side="right") - 1
        valid = local + window <= starts[owner + 1]
        all_hashes.append(hashes[valid])
        all_offsets.append(local[valid])
        segment = last
    hashes = np.concatenate(all_hashes) if all_hashes else np.zeros(0, np.uint64)
    offsets = np.concatenate(all_offsets) if all_offsets else np.zeros(0, np.int64)
    total_windows = len(hashes)
    hashes, offsets = _unique_windows(hashes, offsets, text, window)
    if hash_mask != FULL_MASK:
        hashes = hashes & np.uint64(hash_mask)
        order = np.argsort(hashes, kind="stable")
        hashes, offsets = hashes[order], offsets[order]
    offset_dtype = np.uint32 if len(text) < (1 << 32) else np.uint64
    stored_text = text.astype(np.uint16) if len(text) and text.max() < (1 << 16) else text
    return WindowPool(
        window=window,
        hashes=hashes,
        offsets=offsets.astype(offset_dtype),
        text=stored_text,
        segment_starts=segment_starts.copy(),
        segment_item=segment_item,
        item_ids=item_ids,
        item_set=np.asarray(item_set, dtype=np.int32),
        set_names=[str(p) for p in test_paths],
        hash_mask=hash_mask,
        items=items,
        stats={
            "test_items": len(item_ids),
            "test_characters_normalized": int(length),
            "test_fields_shorter_than_window": short_fields,
            "test_fields_matched_whole": whole_fields,
            "distinct_whole_items": len(items) if items is not None else 0,
            "test_windows": int(total_windows),
            "unique_windows": int(len(hashes)),
        },
    )


def _unique_windows(hashes: np.ndarray, offsets: np.ndarray, text: np.ndarray, window: int):
    """Sort by full 64-bit hash; drop a window only if it equals its predecessor character
    for character (equal hash alone is not enough, so distinct strings are never merged)."""
    order = np.argsort(hashes, kind="stable")
    hashes, offsets = hashes[order], offsets[order]
    keep = np.ones(len(hashes), dtype=bool)
    same_hash = np.nonzero(hashes[1:] == hashes[:-1])[0] + 1
    span = np.arange(window)
    for begin in range(0, len(same_hash), 1 << 16):
        rows = same_hash[begin: begin + (1 << 16)]
        current = text[offsets[rows][:, None] + span]
        previous = text[offsets[rows - 1][:, None] + span]
        keep[rows[(current == previous).all(axis=1)]] = False
    return hashes[keep], offsets[keep]


# ---- scanning the training data ---------------------------------------------------------


@dataclass
class DecontaminationConfig:
    """Inputs, outputs and the method's parameters (S = window, N = samples)."""

    train: str
    tests: list[str]
    out: str
    report: str
    text_key: str = "text"
    test_keys: list[str] | None = None  # None: the same key as the training data
    id_key: str = "id"
    window: int = 50
    samples: int = 10  # 0: check every window of every example (exhaustive)
    # Test fields of at least this many (and fewer than S) normalized characters are matched
    # whole; 0 is the strict published method (such fields are not checked at all).
    min_item_chars: int = 20
    seed: int = 0
    workers: int = 1  # scanning processes; 0 scans in this process
    chunk_bytes: int = 1 << 20  # training JSONL handed to a worker at a time
    skip_bad: bool = False
    show_progress: bool = True
    overwrite: bool = False  # replace existing --out/--report
    hash_mask: int = FULL_MASK  # test hook only: force collisions

    def __post_init__(self) -> None:
        if not self.tests:
            raise ValueError("give at least one test set (--test)")
        if self.window < 1 or self.samples < 0:
            raise ValueError("window (S) must be >= 1 and samples (N) >= 0 (0: every window)")
        if self.min_item_chars < 0:
            raise ValueError("min_item_chars must be >= 0 (0: the strict published method)")
        if self.workers < 0:
            raise ValueError("workers must be >= 0")
        if self.chunk_bytes < 1:
            raise ValueError("chunk_bytes must be >= 1")
        if self.test_keys is None:
            self.test_keys = [self.text_key]


_SCAN: dict = {}


def _init_scanner(pool: WindowPool, config: DecontaminationConfig, read_train: bool = False
                  ) -> None:
    _SCAN.update(pool=pool, config=config)
    if read_train:  # a worker reads its blocks from the file itself (no 1 MB through a pipe)
        _SCAN["train_fd"] = os.open(config.train, os.O_RDONLY)


def _scan_range(first_line: int, offset: int, length: int) -> _ScanResult:
    """:func:`_scan_chunk` of the block of ``length`` bytes at ``offset`` in the training file
    (the parent found its line boundaries and holds the same bytes for the output)."""
    data = os.pread(_SCAN["train_fd"], length, offset)
    if len(data) != length:
        raise RuntimeError(f"{_SCAN['config'].train}: changed while being read")
    return _scan_chunk(LineBlock(_SCAN["config"].train, first_line, data))


@dataclass
class _ScanResult:
    line_count: int
    drop: list[int]  # 0-based positions of the lines not kept (removed or bad), increasing
    kept: int
    removed: list[dict]
    errors: list[tuple[str, int, str]]
    short: int  # kept examples shorter than the window
    text_bytes: int


def _scan_chunk(block: LineBlock) -> _ScanResult:
    """Scan one block: parse, normalize, sample, hash and look up the whole block at once
    (the fast paths of :mod:`decontamination_fastpath`, equal to the per-text definitions)."""
    pool: WindowPool = _SCAN["pool"]
    config: DecontaminationConfig = _SCAN["config"]
    parsed = parse_jsonl_block(block, config.train, config.text_key)
    codepoints, starts, lengths = normalize_batch(parsed.texts)
    keys = _sample_keys(codepoints, starts, lengths, config)
    owners, local_starts = sample_windows(lengths, keys, config.window, config.samples)
    window_starts = starts[owners] + local_starts
    prefix = prefix_sums(codepoints)  # one pass; the windows and the item keys hash from it
    hits, offsets = pool.find_hits(codepoints, window_starts,
                                   hashes_from_prefix(prefix, window_starts, config.window))
    matches: dict[int, dict] = {}
    owner_list = owners[hits].tolist() if hits else []
    for owner, offset in zip(owner_list, offsets):  # hits come in (owner, start) order
        if owner not in matches:
            set_index, item_id, window_text = pool.describe_match(offset)
            matches[owner] = {"test_set": pool.set_names[set_index], "test_item": item_id,
                              "match": "window", "matched_window": window_text}
    if pool.items is not None and len(pool.items):
        for owner, row in pool.items.find_items(codepoints, starts, lengths, prefix).items():
            if owner not in matches:  # a window match is reported first
                item, item_text = pool.items.describe(row)
                matches[owner] = {"test_set": pool.set_names[int(pool.item_set[item])],
                                  "test_item": pool.item_ids[item], "match": "whole_item",
                                  "matched_item": item_text}
    removed: list[dict] = []
    for owner in sorted(matches):
        position = parsed.positions[owner]
        line_no = block.first_line + position
        name = _record_name(parsed.records[owner].get(config.id_key), f"line:{line_no}")
        removed.append({"id": name, "line": line_no, **matches[owner]})
    drop = {parsed.positions[owner] for owner in matches}
    drop.update(line_no - block.first_line for _, line_no, _ in parsed.errors)
    short = lengths < config.window
    if matches:
        short[list(matches)] = False
    # Only positions go back to the parent (which holds the block), not the kept bytes.
    return _ScanResult(parsed.line_count, sorted(drop), len(parsed.texts) - len(removed),
                       removed, sorted(parsed.errors, key=lambda error: error[1]),
                       int(short.sum()), parsed.record_bytes)


def _sample_keys(codepoints: np.ndarray, starts: np.ndarray, lengths: np.ndarray,
                 config: DecontaminationConfig) -> np.ndarray:
    """``_example_keys`` for the examples whose windows are sampled (0 for the others)."""
    keys = np.zeros(len(lengths), dtype=np.uint64)
    if config.samples == 0:
        return keys
    need = np.flatnonzero(lengths - config.window + 1 > config.samples)
    if len(need) == 0:
        return keys
    data = memoryview(np.ascontiguousarray(codepoints, dtype="<u4")).cast("B")
    begins = starts[need] * 4
    ends = begins + lengths[need] * 4
    # C-level iteration: one memoryview slice and one xxh3 call per example
    pieces = map(data.__getitem__, map(slice, begins.tolist(), ends.tolist()))
    digests = map(xxhash.xxh3_64_intdigest, pieces, repeat(config.seed & FULL_MASK))
    keys[need] = np.fromiter(digests, dtype=np.uint64, count=len(need))
    return keys


def _scanned(config: DecontaminationConfig, pool: WindowPool):
    chunks = iter_line_blocks(config.train, config.chunk_bytes)
    if config.workers == 0:
        _init_scanner(pool, config)
        for chunk in chunks:
            yield chunk, _scan_chunk(chunk)
        return
    methods = multiprocessing.get_all_start_methods()
    # fork shares the pool's arrays with the workers copy-on-write instead of pickling them.
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    with context.Pool(config.workers, initializer=_init_scanner,
                      initargs=(pool, config, True)) as procs:
        pending: deque = deque()
        offset = 0  # blocks are the file's bytes, back to back
        for chunk in chunks:
            task = (chunk.first_line, offset, len(chunk.data))
            offset += len(chunk.data)
            pending.append((chunk, procs.apply_async(_scan_range, task)))
            if len(pending) >= 4 * config.workers:
                done, result = pending.popleft()
                yield done, result.get()
        while pending:
            done, result = pending.popleft()
            yield done, result.get()


def decontaminate(config: DecontaminationConfig, pool: WindowPool | None = None) -> dict:
    """Write the training examples that survive to ``config.out``; return (and write) the report.

    Kept lines are copied byte for byte. Bad lines stop the run with ``file:line: reason``
    unless ``skip_bad``; nothing is left at ``out``/``report`` if the run fails. Before any
    work: an output that is an input (or ``out`` == ``report``) is refused, and an existing
    output needs ``overwrite``.
    """
    from tqdm import tqdm

    outputs, flags = [config.out, config.report], ["--out", "--report"]
    inputs = [config.train, *config.tests]
    input_flags = ["--train"] + ["--test"] * len(config.tests)
    for output, flag in zip(outputs, flags):
        refuse_overlap(output, inputs, output_flag=flag, input_flags=input_flags)
        check_output(output, config.overwrite, flag=flag)
    if Path(config.out).absolute().resolve() == Path(config.report).absolute().resolve():
        raise ValueError(f"--out and --report are the same path {config.out}; give each "
                         "output its own path")
    require_file(config.train)
    started = time.perf_counter()
    test_skips = SkipStats()
    if pool is None:
        pool = build_window_pool(config.tests, config.test_keys, config.window, config.id_key,
                                 config.hash_mask, test_skips if config.skip_bad else None,
                                 min_item_chars=config.min_item_chars)
    char_table()  # built once (~0.3 s) before the scan, and before workers fork
    pool_seconds = time.perf_counter() - started
    train_skips = SkipStats()
    removed: list[dict] = []
    counts = {"kept": 0, "removed": 0, "kept_shorter_than_window": 0, "train_bytes": 0}
    scan_started = time.perf_counter()
    with atomic_files(outputs, overwrite=config.overwrite, inputs=inputs,
                      input_flags=input_flags, flags=flags) as (out_tmp, report_tmp):
        with open(out_tmp, "wb") as out, tqdm(total=Path(config.train).stat().st_size, unit="B",
                                               unit_scale=True, desc="decontaminate",
                                               disable=not config.show_progress) as bar:
            for chunk, result in _scanned(config, pool):
                for path, line_no, reason in result.errors:
                    error = BadRecordError(path, line_no, reason)
                    if not config.skip_bad:
                        raise error
                    train_skips.add(str(error))
                # the kept lines, verbatim, each ending in "\n"
                out.write(kept_lines(chunk, result.line_count, result.drop))
                counts["kept"] += result.kept
                counts["removed"] += len(result.removed)
                counts["kept_shorter_than_window"] += result.short
                counts["train_bytes"] += result.text_bytes
                removed.extend(result.removed)
                bar.update(len(chunk.data))
        if counts["kept"] + counts["removed"] == 0:
            raise ValueError(f"{config.train}: no training examples"
                             + (" (every line was bad)" if train_skips.skipped else "")
                             + "; nothing to decontaminate")
        scan_seconds = time.perf_counter() - scan_started
        report = _report(config, pool, counts, removed, train_skips, test_skips, pool_seconds,
                         scan_seconds)
        Path(report_tmp).write_text(json.dumps(report, ensure_ascii=False, indent=2) + "\n",
                                    encoding="utf-8")
    return report


def _report(config, pool, counts, removed, train_skips, test_skips, pool_seconds,
            scan_seconds) -> dict:
    per_set = {
        name: {"removed": 0, "removed_by_whole_item": 0, "removed_ids": [], "matches": []}
        for name in pool.set_names
    }
    by_item = 0
    for entry in removed:
        bucket = per_set[entry["test_set"]]
        bucket["removed"] += 1
        bucket["removed_ids"].append(entry["id"])
        if entry["match"] == "whole_item":
            bucket["removed_by_whole_item"] += 1
            by_item += 1
        bucket["matches"].append({k: v for k, v in entry.items() if k != "test_set"})
    megabytes = counts["train_bytes"] / 1e6
    min_item_chars = pool.items.min_chars if pool.items is not None else 0
    return {
        "removed": counts["removed"],
        "removed_by_window": counts["removed"] - by_item,
        "removed_by_whole_item": by_item,
        "kept": counts["kept"],
        "kept_shorter_than_window": counts["kept_shorter_than_window"],
        "skipped_bad_lines": train_skips.skipped,
        "bad_line_examples": train_skips.examples,
        "skipped_bad_test_lines": test_skips.skipped,
        "test_sets": per_set,
        "params": {
            "window": config.window, "samples": config.samples, "seed": config.seed,
            "min_item_chars": min_item_chars,
            "method": ("published (windows only)" if min_item_chars == 0 else
                       f"published windows + whole test fields of {min_item_chars} to "
                       f"{config.window - 1} characters"),
            "normalization": "NFKC + casefold + letters/digits only",
            "text_key": config.text_key, "test_keys": config.test_keys,
        },
        "pool": {**pool.stats, "bytes": pool.nbytes},
        "timing": {
            "pool_seconds": round(pool_seconds, 4),
            "scan_seconds": round(scan_seconds, 4),
            "train_megabytes": round(megabytes, 4),
            "train_mb_per_second": round(megabytes / scan_seconds, 3) if scan_seconds else None,
        },
        "inputs": {"train": config.train, "tests": list(config.tests), "out": config.out},
    }
