"""Strict JSONL reading: every bad line is reported as ``file:line: reason``.

Data pipelines fail late and expensively when a malformed record slips through, so each
reader either stops at the first bad line with an error naming it, or (``skip_bad``) skips it
and counts it so the report says how much input was dropped.
"""

from __future__ import annotations

import json
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "BadRecordError",
    "SkipStats",
    "check_text",
    "SURROGATE_RE",
    "decode_record",
    "get_text",
    "get_messages",
    "iter_raw_lines",
    "iter_records",
    "iter_line_blocks",
    "iter_texts",
    "LineBlock",
    "require_file",
]

_MAX_REMEMBERED_ERRORS = 20
# JSON's "\ud800" is valid JSON but not text: Python decodes it to a lone surrogate, which
# no encoder (UTF-8 output, tokenizers, UTF-32 for normalization) accepts.
SURROGATE_RE = re.compile("[\ud800-\udfff]")


class BadRecordError(ValueError):
    """A JSONL line that cannot be used; ``str(err)`` is ``"<file>:<line>: <reason>"``."""

    def __init__(self, path: str | Path, line_no: int, reason: str) -> None:
        super().__init__(f"{path}:{line_no}: {reason}")
        self.path = str(path)
        self.line_no = line_no
        self.reason = reason


@dataclass
class SkipStats:
    """Bad lines skipped under ``--skip-bad``: a count plus the first few messages."""

    skipped: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, message: str) -> None:
        self.skipped += 1
        if len(self.examples) < _MAX_REMEMBERED_ERRORS:
            self.examples.append(message)

    def as_dict(self) -> dict[str, Any]:
        return {"skipped_bad_lines": self.skipped, "bad_line_examples": list(self.examples)}


_SPECIAL_FILES = ((stat.S_ISDIR, "is a directory, not a file"),
                  (stat.S_ISCHR, "not a regular file (a character device)"),
                  (stat.S_ISBLK, "not a regular file (a block device)"),
                  (stat.S_ISFIFO, "not a regular file (a pipe)"),
                  (stat.S_ISSOCK, "not a regular file (a socket)"))


def require_file(path: str | Path, flag: str | None = None) -> Path:
    """``path`` if it is a regular file (or a link to one); otherwise the real cause, named
    with ``flag`` (``--prompts PATH: is a directory, not a file``; a flag ending in ``=`` is
    joined without a space: ``data.preference_file=PATH``): ``FileNotFoundError`` when
    nothing is there, :class:`~nemo_exaone.config.errors.InputError` for a directory, a device
    (``/dev/null``), a pipe or a socket, which an input reader would read as empty or once."""
    from nemo_exaone.config.errors import InputError

    path = Path(path)
    where = str(path) if not flag else f"{flag}{path}" if flag.endswith("=") \
        else f"{flag} {path}"
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise FileNotFoundError(f"{where}: no such file") from None
    except OSError as exc:  # permission, a loop of links, a file name too long
        raise InputError(f"{where}: cannot be read ({exc.strerror})") from None
    if stat.S_ISREG(mode):
        return path
    for test, cause in _SPECIAL_FILES:
        if test(mode):
            raise InputError(f"{where}: {cause}")
    raise InputError(f"{where}: not a regular file")


def iter_raw_lines(path: str | Path) -> Iterator[tuple[int, bytes]]:
    """Yield ``(line_number, raw_bytes)`` (1-based, line ending stripped) from a file.

    Lines stay bytes so that non-UTF-8 input is reported per line instead of failing the
    whole file inside Python's text decoder.
    """
    path = require_file(path)
    with open(path, "rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            if raw.endswith(b"\n"):
                raw = raw[:-1]
                if raw.endswith(b"\r"):
                    raw = raw[:-1]
            if line_no == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]  # a UTF-8 byte-order mark is not part of the record
            yield line_no, raw


@dataclass
class LineBlock:
    """Whole lines of a file, as one bytes object: cheap for a parent process to hand to a
    worker (one read, no per-line work), which splits it with :meth:`lines`."""

    path: str
    first_line: int
    data: bytes

    def lines(self) -> list[tuple[int, bytes]]:
        """``(line_number, raw_bytes)`` pairs, exactly as :func:`iter_raw_lines` yields them."""
        parts = self.data.split(b"\n")
        if self.data.endswith(b"\n"):
            parts.pop()
        out = []
        for offset, raw in enumerate(parts):
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            if offset == 0 and self.first_line == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            out.append((self.first_line + offset, raw))
        return out


def iter_line_blocks(path: str | Path, block_bytes: int = 1 << 20) -> Iterator[LineBlock]:
    """Yield the file as blocks of about ``block_bytes`` bytes that end at line boundaries."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    next_line = 1
    with open(path, "rb") as handle:
        carry = b""
        while True:
            piece = handle.read(block_bytes)
            if not piece:
                break
            data = carry + piece
            cut = data.rfind(b"\n") + 1
            if cut == 0:  # no line end yet: keep reading
                carry = data
                continue
            block, carry = data[:cut], data[cut:]
            yield LineBlock(str(path), next_line, block)
            next_line += block.count(b"\n")
        if carry:
            yield LineBlock(str(path), next_line, carry)


def decode_record(raw: bytes, path: str | Path, line_no: int) -> dict[str, Any]:
    """Parse one JSONL line into a JSON object, or raise :class:`BadRecordError`."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRecordError(path, line_no, f"not valid UTF-8 (byte {exc.start})") from None
    if not text.strip():
        raise BadRecordError(path, line_no, "empty line")
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadRecordError(path, line_no, f"malformed JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(record, dict):
        raise BadRecordError(path, line_no, f"expected a JSON object, got {type(record).__name__}")
    return record


def iter_records(path: str | Path, what: str = "records") -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for each non-blank line of a JSONL file.

    The one reader behind every record-per-line input (preference pairs, chats, scoring
    input): a bad line raises :class:`BadRecordError` (``file:line: reason``) and a file with
    no record raises :class:`~nemo_exaone.config.errors.InputError` ``"<file>: no <what>"``
    once iteration ends, so an empty input never reaches training as an empty dataset.
    """
    from nemo_exaone.config.errors import InputError

    count = 0
    for line_no, raw in iter_raw_lines(path):
        if not raw.strip():
            continue
        count += 1
        yield line_no, decode_record(raw, path, line_no)
    if count == 0:
        raise InputError(f"{path}: no {what}")


def check_text(value: str, what: str, path: str | Path, line_no: int) -> str:
    """Return ``value`` unless it holds an unpaired surrogate (raise :class:`BadRecordError`)."""
    match = SURROGATE_RE.search(value)
    if match is not None:
        raise BadRecordError(
            path, line_no, f"{what} holds an unpaired surrogate (U+{ord(match.group()):04X} at "
            f"character {match.start()}), which is not text"
        )
    return value


def get_text(record: dict[str, Any], key: str, path: str | Path, line_no: int) -> str:
    """Return ``record[key]`` if it is a string of text, else raise :class:`BadRecordError`."""
    if key not in record:
        raise BadRecordError(path, line_no, f"missing key {key!r}")
    value = record[key]
    if not isinstance(value, str):
        raise BadRecordError(
            path, line_no, f"key {key!r} must be a string, got {type(value).__name__}"
        )
    return check_text(value, f"key {key!r}", path, line_no)


def get_messages(
    record: dict[str, Any], key: str, path: str | Path, line_no: int
) -> list[dict[str, str]]:
    """Return a validated ``[{"role", "content"}, ...]`` list from ``record[key]``."""
    if key not in record:
        raise BadRecordError(path, line_no, f"missing key {key!r}")
    messages = record[key]
    if not isinstance(messages, list) or not messages:
        raise BadRecordError(path, line_no, f"key {key!r} must be a non-empty list of messages")
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise BadRecordError(path, line_no, f"{key}[{index}] must be an object")
        for field_name in ("role", "content"):
            if field_name not in message:
                raise BadRecordError(path, line_no, f"{key}[{index}]: missing key {field_name!r}")
            if not isinstance(message[field_name], str):
                raise BadRecordError(
                    path,
                    line_no,
                    f"{key}[{index}].{field_name} must be a string, "
                    f"got {type(message[field_name]).__name__}",
                )
            check_text(message[field_name], f"{key}[{index}].{field_name}", path, line_no)
    return messages


def iter_texts(
    paths: list[str | Path], key: str = "text", skip_bad: bool = False, stats: SkipStats | None = None
) -> Iterator[str]:
    """Yield the ``key`` strings of JSONL files (``.txt`` files: each non-empty line).

    Bad lines raise :class:`BadRecordError` unless ``skip_bad``, in which case they are
    counted in ``stats``.
    """
    for path in paths:
        plain_text = str(path).endswith(".txt")
        for line_no, raw in iter_raw_lines(path):
            try:
                if plain_text:
                    try:
                        text = raw.decode("utf-8")
                    except UnicodeDecodeError as exc:
                        raise BadRecordError(
                            path, line_no, f"not valid UTF-8 (byte {exc.start})"
                        ) from None
                    if not text.strip():
                        continue
                    yield text
                else:
                    yield get_text(decode_record(raw, path, line_no), key, path, line_no)
            except BadRecordError as err:
                if not skip_bad:
                    raise
                if stats is not None:
                    stats.add(str(err))
