"""Fast paths of the decontamination scan: whole chunks at a time, the same results.

:mod:`nemo_exaone.data.decontamination` defines the method with simple per-text code
(``normalize_codepoints``, ``decode_record`` per line); the functions
here compute exactly the same values for a whole chunk of training data with a few C-speed
passes, and fall back to that simple code wherever a shortcut would not be exact:

* :func:`parse_jsonl_block` decodes the block's UTF-8 once and runs the ``json`` module's
  own scanner line by line; a line it cannot take whole (bad JSON, leading/trailing
  whitespace, not an object, missing or non-string text, and, in a block that holds a
  ``\\uD800``-``\\uDFFF`` escape, text with an unpaired surrogate) is handed to
  ``decode_record`` / ``get_text`` so errors read exactly as before. Blocks with ``\\r`` or a
  byte-order mark, or that are not valid UTF-8 as a whole, are parsed line by line as before.
* :func:`normalize_batch` maps every character through one table (casefolded code point if
  it is a letter or digit, 0 if it is dropped). This equals NFKC + casefold + ``isalnum``
  for text made only of characters that NFKC provably leaves alone (quick-check "yes",
  combining class 0, not the second half of a canonical composition) and that casefold to
  one character, or that stand for such text (no-break space, full-width forms); the table
  marks every other character "undecided", and the few pieces of text around undecided
  characters are normalized by the definition itself (see :func:`normalize_batch`).

The window hash itself has one implementation, :mod:`nemo_exaone.data.window_hash`, shared
with the pool.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from itertools import chain

import numpy as np

from nemo_exaone.data.jsonl import SURROGATE_RE, BadRecordError, LineBlock, decode_record, get_text

__all__ = ["char_table", "normalize_batch", "parse_jsonl_block", "ParsedBlock"]

SPECIAL = 0xFFFFFFFF  # table value: the character needs the per-text (NFKC) path
_BOM = b"\xef\xbb\xbf"
# Conjoining Hangul jamo (and their extensions) compose algorithmically; always take the
# per-text path for them (precomposed syllables U+AC00..U+D7A3 are plain characters).
_JAMO_RANGES = ((0x1100, 0x1200), (0xA960, 0xA980), (0xD7B0, 0xD800))


@lru_cache(maxsize=1)
def _tables() -> tuple[np.ndarray, np.ndarray]:
    table = np.zeros(0x110000, dtype=np.uint32)
    category, combining = unicodedata.category, unicodedata.combining
    decomposition, is_normalized = unicodedata.decomposition, unicodedata.is_normalized
    second_halves: set[int] = set()
    unstable: list[int] = []  # NFKC changes them, but they may still have a table value
    for cp in range(0x110000):
        char = chr(cp)
        if category(char) in ("Cn", "Co", "Cs"):
            # Unassigned, private use, surrogates: NFKC and casefold leave them alone and
            # they are not alphanumeric (a test checks this for every code point).
            continue
        parts = decomposition(char).split()
        if len(parts) == 2 and not parts[0].startswith("<"):
            second_halves.add(int(parts[1], 16))  # may compose with what precedes it
        folded = char.casefold()
        if len(folded) != 1 or combining(char):
            table[cp] = SPECIAL
        elif not is_normalized("NFKC", char):
            table[cp] = SPECIAL
            unstable.append(cp)
        elif folded.isalnum():
            table[cp] = ord(folded)
    table[sorted(second_halves)] = SPECIAL
    for low, high in _JAMO_RANGES:
        table[low:high] = SPECIAL
    second_halves.update(range(0x1160, 0x1200))  # Hangul vowel and trailing jamo
    second_halves.update(range(0xD7B0, 0xD800))
    # A starter that composes with nothing before it and whose NFKC form is made of plain
    # characters only (e.g. no-break space, full-width forms, "…"): replacing it by that
    # form gives a canonically equivalent string of plain characters, which NFKC leaves
    # alone; so it stands for what its form normalizes to, if that is at most one character.
    values = {}
    for cp in unstable:
        if cp in second_halves:
            continue
        form = [int(table[ord(c)]) for c in unicodedata.normalize("NFKC", chr(cp))]
        kept = [value for value in form if value != 0]
        if SPECIAL not in form and len(kept) <= 1:
            values[cp] = kept[0] if kept else 0
    for cp, value in values.items():
        table[cp] = value
    # NFKC(x + c + y) == NFKC(x) + NFKC(c + y) when the full decomposition of c starts with a
    # starter that is not the second half of any composition (nothing in x can reorder or
    # compose with it), and when c itself is such a starter. Plain characters all qualify.
    safe_start = np.zeros(0x110000, dtype=bool)
    for cp in np.flatnonzero(table == SPECIAL).tolist():
        first = unicodedata.normalize("NFKD", chr(cp))[0]
        safe_start[cp] = (cp not in second_halves and not combining(chr(cp))
                          and ord(first) not in second_halves and not combining(first))
    table.flags.writeable = False
    safe_start.flags.writeable = False
    return table, safe_start


def char_table() -> np.ndarray:
    """``table[cp]``: the casefolded code point of ``chr(cp)`` if it is a letter or digit, 0
    if normalization drops it, :data:`SPECIAL` if the table cannot decide (see module doc).

    4.4 MB, built once per process in about 0.3 s (shared with forked workers).
    """
    return _tables()[0]


def _normalize_piece(piece: str) -> list[int]:
    """The definition (NFKC, casefold, letters and digits), for a short piece of text."""
    return [ord(c) for c in unicodedata.normalize("NFKC", piece).casefold() if c.isalnum()]


def normalize_batch(texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normalize many texts: ``(codepoints, starts, lengths)``; text ``i`` normalizes to
    ``codepoints[starts[i]: starts[i] + lengths[i]]`` (in order: ``starts`` are the running
    sums of ``lengths``). The same code points as ``normalize_codepoints``.

    Characters the table cannot decide are normalized by the definition, a short piece at
    a time: each piece starts at a safe boundary (before the undecided character if it is
    a safe start, else before the decided character preceding it) and takes the undecided
    characters that follow; a decided character is always a safe start, so the pieces and
    the characters around them normalize independently.
    """
    table, safe_start = _tables()
    count = len(texts)
    raw_lengths = np.fromiter(map(len, texts), dtype=np.int64, count=count)
    raw_ends = np.cumsum(raw_lengths)
    raw_starts = raw_ends - raw_lengths
    joined = "".join(texts)
    raw = np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32)
    mapped = np.take(table, raw)
    if not (len(mapped) and mapped.max() == SPECIAL):
        keep = mapped != 0
        codepoints = np.compress(keep, mapped)
        lengths = np.zeros(count, dtype=np.int64)
        nonempty = np.flatnonzero(raw_lengths)
        if len(nonempty):  # kept characters per (non-empty) text
            lengths[nonempty] = np.add.reduceat(keep, raw_starts[nonempty], dtype=np.int64)
        return codepoints, np.cumsum(lengths) - lengths, lengths
    special = np.flatnonzero(mapped == SPECIAL)
    owner = np.searchsorted(raw_ends, special, side="right")
    at_text_start = special == raw_starts[owner]
    follows_special = np.zeros(len(special), dtype=bool)
    follows_special[1:] = (special[1:] - 1 == special[:-1]) & (owner[1:] == owner[:-1])
    safe = safe_start[raw[special]]
    opens = safe | at_text_start | ~follows_special  # this character opens a new piece
    first = special[opens]
    piece_start = np.where(safe[opens] | at_text_start[opens], first, first - 1)
    piece_end = special[np.append(opens[1:], True)] + 1  # last special of each piece, + 1
    mapped[special] = 0
    mapped[piece_start] = 0  # a decided character taken into the piece
    keep = mapped != 0
    codepoints = np.compress(keep, mapped)
    kept_before = np.zeros(len(keep) + 1, dtype=np.int64)
    np.cumsum(keep, out=kept_before[1:])
    cache: dict[str, list[int]] = {}
    pieces = []
    for begin, end in zip(piece_start.tolist(), piece_end.tolist()):
        piece = joined[begin:end]
        value = cache.get(piece)
        if value is None:
            value = cache[piece] = _normalize_piece(piece)
        pieces.append(value)
    piece_lengths = np.fromiter(map(len, pieces), dtype=np.int64, count=len(pieces))
    values = np.fromiter(chain.from_iterable(pieces), dtype=np.uint32,
                         count=int(piece_lengths.sum()))
    codepoints = np.insert(codepoints, np.repeat(kept_before[piece_start], piece_lengths),
                           values)
    lengths = kept_before[raw_ends] - kept_before[raw_starts]
    lengths += np.bincount(owner[opens], weights=piece_lengths, minlength=count).astype(np.int64)
    return codepoints, np.cumsum(lengths) - lengths, lengths


# ---- JSONL ------------------------------------------------------------------------------

_SCAN_ONCE = json.JSONDecoder().scan_once  # what json.loads runs after skipping whitespace
# A lone surrogate in valid UTF-8 JSON can only come from a \\uD800-\\uDFFF escape.
_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")


@dataclass
class ParsedBlock:
    """The usable records of a block, in order, and its bad lines."""

    line_count: int
    texts: list[str]
    records: list[dict]
    positions: list[int]  # line index (0-based, in the block) of each record
    errors: list[tuple[str, int, str]]  # (path, line number, reason)
    record_bytes: int = 0  # bytes of the usable lines (without line endings)


def _slow_line(raw: bytes, path: str, line_no: int, text_key: str, parsed: ParsedBlock,
               position: int) -> bool:
    try:
        record = decode_record(raw, path, line_no)
        text = get_text(record, text_key, path, line_no)
    except BadRecordError as err:
        parsed.errors.append((err.path, err.line_no, err.reason))
        return False
    parsed.texts.append(text)
    parsed.records.append(record)
    parsed.positions.append(position)
    return True


def parse_jsonl_block(block: LineBlock, path: str, text_key: str) -> ParsedBlock:
    """Records and errors of a block, exactly as ``decode_record`` + ``get_text`` per line."""
    data = block.data
    text = None
    if b"\r" not in data and not (block.first_line == 1 and data.startswith(_BOM)):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            pass
    if text is None:  # line by line, as LineBlock.lines() splits them
        lines = block.lines()
        parsed = ParsedBlock(len(lines), [], [], [], [])
        for position, (line_no, raw) in enumerate(lines):
            if _slow_line(raw, path, line_no, text_key, parsed, position):
                parsed.record_bytes += len(raw)
        return parsed
    parsed = ParsedBlock(0, [], [], [], [])
    texts, records, positions = parsed.texts, parsed.records, parsed.positions
    scan, find = _SCAN_ONCE, text.find
    # Only a block with a surrogate escape needs its texts checked (one C-speed search).
    suspicious = _ESCAPED_SURROGATE.search(text) is not None
    bad_bytes = 0
    size = len(text)
    begin = position = 0
    while begin < size or position == 0:  # (an empty block is one empty line)
        end_of_line = find("\n", begin)
        if end_of_line < 0:
            end_of_line = size
        try:  # json.loads runs this scanner (after skipping whitespace); a bad line may make
            # it run on into the next lines: whatever it returns then does not end at the
            # line's end, and whatever it raises is not the line's own error.
            record, end = scan(text, begin)
        except (StopIteration, ValueError, RecursionError):
            record, end = None, -1
        if end == end_of_line and type(record) is dict:
            value = record.get(text_key)
            if type(value) is str and not (suspicious and SURROGATE_RE.search(value)):
                texts.append(value)
                records.append(record)
                positions.append(position)
                begin = end_of_line + 1
                position += 1
                continue
        # Anything unusual: the reference path decides (and words the error).
        raw = text[begin:end_of_line].encode("utf-8")
        if not _slow_line(raw, path, block.first_line + position, text_key, parsed, position):
            bad_bytes += len(raw)
        begin = end_of_line + 1
        position += 1
    parsed.line_count = position
    newlines = position - (not data.endswith(b"\n"))
    parsed.record_bytes = len(data) - newlines - bad_bytes
    return parsed


def kept_lines(block: LineBlock, line_count: int, drop: list[int]) -> bytes:
    """The block's lines except the (0-based, sorted) ``drop`` ones, each ending in ``\\n``:
    what joining ``raw + b"\\n"`` over ``block.lines()`` gives."""
    data = block.data
    if b"\r" in data or (block.first_line == 1 and data.startswith(_BOM)):
        dropped = set(drop)
        return b"".join(raw + b"\n" for position, (_, raw) in enumerate(block.lines())
                        if position not in dropped)
    if not drop:
        return data if data.endswith(b"\n") or not data else data + b"\n"
    ends = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10)  # "\n" positions
    if len(ends) < line_count:  # last line without "\n"
        ends = np.append(ends, len(data))
    ends_list = ends.tolist()
    pieces = []
    begin = 0
    for position in drop:
        line_start = ends_list[position - 1] + 1 if position else 0
        if line_start > begin:
            pieces.append(data[begin:line_start])
        begin = ends_list[position] + 1
    if begin < len(data):
        pieces.append(data[begin:])
    out = b"".join(pieces)
    return out if out.endswith(b"\n") or not out else out + b"\n"
