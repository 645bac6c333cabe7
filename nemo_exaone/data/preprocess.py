"""JSONL -> Megatron-Core indexed dataset (``PREFIX.bin`` / ``PREFIX.idx``).

Written with Megatron-Core's own ``IndexedDatasetBuilder``: one document per JSONL record,
one sequence per document (so ``document_indices`` keep every document boundary; the
long-context stage reads whole documents back), EOD (``[|endofturn|]``) appended to each
text document.

Chat mode (``{"messages": [...]}`` records, for SFT) writes the rendered conversation's
tokens to ``PREFIX.bin/.idx`` and a second indexed dataset, ``PREFIX_assistant_mask.bin/.idx``
(uint8, same sequence lengths and document boundaries), holding 1 for assistant tokens.
Conversations are stored exactly as rendered, with no extra EOD (the last assistant turn
already ends in ``[|endofturn|]``); pass ``append_eod=True`` to add one (mask 0).

Workers tokenize chunks of lines in separate processes; the parent writes results in input
order, so the output does not depend on the number of workers. All outputs are written
under temporary names and renamed only when the whole input was processed.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from itertools import chain
from pathlib import Path

import numpy as np

from nemo_exaone.data.jsonl import (
    BadRecordError,
    LineBlock,
    SkipStats,
    decode_record,
    get_messages,
    get_text,
    iter_line_blocks,
    require_file,
)
from nemo_exaone.runtime.outputs import atomic_files

__all__ = [
    "MASK_SUFFIX",
    "PreprocessConfig",
    "PreprocessResult",
    "mask_prefix",
    "preprocess",
    "token_dtype_for_vocab",
]

MASK_SUFFIX = "_assistant_mask"
MODES = ("text", "chat")


def mask_prefix(prefix: str | Path) -> str:
    """Prefix of the assistant-mask dataset that accompanies a chat dataset at ``prefix``."""
    return f"{prefix}{MASK_SUFFIX}"


def token_dtype_for_vocab(vocab_size: int) -> type[np.number]:
    """uint16 when every id fits (small tokenizers), int32 otherwise (EXAONE's 102,400)."""
    return np.uint16 if vocab_size < 65_500 else np.int32


@dataclass
class PreprocessConfig:
    """Inputs, output prefix and tokenizer of one preprocessing run."""

    inputs: list[str]
    output_prefix: str
    tokenizer_dir: str
    mode: str = "text"  # "text": {"<text_key>": str};  "chat": {"<messages_key>": [...]}
    text_key: str = "text"
    messages_key: str = "messages"
    append_eod: bool | None = None  # None: True for text, False for chat
    workers: int = 1  # tokenizing processes; 0 tokenizes in this process
    chunk_bytes: int = 1 << 20  # JSONL handed to a worker at a time
    skip_bad: bool = False
    show_progress: bool = True
    overwrite: bool = False  # replace existing PREFIX.* outputs

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if not self.inputs:
            raise ValueError("no input files given")
        if self.workers < 0:
            raise ValueError("workers must be >= 0")
        if self.chunk_bytes < 1:
            raise ValueError("chunk_bytes must be >= 1")
        if self.append_eod is None:
            self.append_eod = self.mode == "text"


@dataclass
class PreprocessResult:
    """What was written: counts, paths and skipped lines."""

    output_prefix: str
    mask_prefix: str | None
    documents: int = 0
    tokens: int = 0
    assistant_tokens: int = 0
    input_bytes: int = 0
    seconds: float = 0.0
    token_dtype: str = ""
    eod_id: int = -1
    skipped: SkipStats = field(default_factory=SkipStats)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else float("nan")

    def as_dict(self) -> dict:
        out = asdict(self)
        out.pop("skipped")
        out.update(self.skipped.as_dict())
        out["tokens_per_second"] = self.tokens_per_second
        return out


# ---- worker side: tokenization of chunks of raw lines -------------------------------------

_WORKER: dict = {}


def _init_worker(tokenizer_dir: str, mode: str, text_key: str, messages_key: str,
                 append_eod: bool, in_worker_process: bool = True) -> None:
    if in_worker_process:  # one core per worker process; the caller's setting is left alone
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
    from nemo_exaone.data.tokenizer import load_tokenizer

    _WORKER.update(
        tokenizer=load_tokenizer(tokenizer_dir), mode=mode, text_key=text_key,
        messages_key=messages_key, append_eod=append_eod,
    )


@dataclass
class _EncodedChunk:
    tokens: np.ndarray  # int32 ids of all documents of the chunk, concatenated
    lengths: list[int]
    masks: np.ndarray | None
    errors: list[tuple[str, int, str]]  # (file, line, reason) of bad lines
    nbytes: int
    path: str  # the input file of the chunk


def _encode_chunk(chunk: LineBlock) -> _EncodedChunk:
    from nemo_exaone.data.chat_format import encode_chat

    tokenizer = _WORKER["tokenizer"]
    eod = [tokenizer.eod_id] if _WORKER["append_eod"] else []
    errors: list[tuple[str, int, str]] = []
    docs: list[list[int]] = []
    masks: list[list[int]] = []
    texts: list[str] = []
    for line_no, raw in chunk.lines():
        try:
            record = decode_record(raw, chunk.path, line_no)
            if _WORKER["mode"] == "text":
                texts.append(get_text(record, _WORKER["text_key"], chunk.path, line_no))
                continue
            messages = get_messages(record, _WORKER["messages_key"], chunk.path, line_no)
            try:
                encoding = encode_chat(tokenizer, messages)
            except ValueError as exc:
                raise BadRecordError(chunk.path, line_no, str(exc)) from None
            docs.append(encoding.ids + eod)
            masks.append(encoding.assistant_mask + [0] * len(eod))
        except BadRecordError as err:
            errors.append((err.path, err.line_no, err.reason))
    if texts:
        docs = [ids + eod for ids in tokenizer.encode_batch(texts)]
    lengths = [len(d) for d in docs]
    flat = np.fromiter(chain.from_iterable(docs), dtype=np.int32, count=sum(lengths))
    mask_flat = None
    if _WORKER["mode"] == "chat":
        mask_flat = np.fromiter(chain.from_iterable(masks), dtype=np.uint8, count=sum(lengths))
    return _EncodedChunk(flat, lengths, mask_flat, errors, len(chunk.data), chunk.path)


# ---- parent side: reading, ordering, writing ----------------------------------------------


def _iter_chunks(paths: list[str], chunk_bytes: int) -> Iterator[LineBlock]:
    for path in paths:
        yield from iter_line_blocks(path, chunk_bytes)


def _worker_context() -> multiprocessing.context.BaseContext:
    """fork where available: workers start fast and need no importable ``__main__``; they
    only run tokenizers and numpy, never torch, so inheriting the parent's state is safe."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def _encoded_chunks(config: PreprocessConfig) -> Iterator[_EncodedChunk]:
    """Encoded chunks in input order; at most a few chunks per worker are in flight."""
    init_args = (config.tokenizer_dir, config.mode, config.text_key, config.messages_key,
                 config.append_eod)
    chunks = _iter_chunks(config.inputs, config.chunk_bytes)
    if config.workers == 0:
        _init_worker(*init_args, in_worker_process=False)
        yield from map(_encode_chunk, chunks)
        return
    context = _worker_context()
    with context.Pool(config.workers, initializer=_init_worker, initargs=init_args) as pool:
        pending: deque = deque()
        max_in_flight = 4 * config.workers
        for chunk in chunks:
            pending.append(pool.apply_async(_encode_chunk, (chunk,)))
            if len(pending) >= max_in_flight:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


def preprocess(config: PreprocessConfig) -> PreprocessResult:
    """Tokenize ``config.inputs`` into an indexed dataset at ``config.output_prefix``."""
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder
    from tqdm import tqdm

    from nemo_exaone.data.tokenizer import load_tokenizer

    for path in config.inputs:
        require_file(path)
    tokenizer = load_tokenizer(config.tokenizer_dir)  # fail fast, before starting workers
    dtype = token_dtype_for_vocab(tokenizer.vocab_size)
    prefix = str(config.output_prefix)
    chat = config.mode == "chat"
    result = PreprocessResult(
        output_prefix=prefix, mask_prefix=mask_prefix(prefix) if chat else None,
        token_dtype=np.dtype(dtype).name, eod_id=tokenizer.eod_id,
    )
    finals = [f"{prefix}.bin", f"{prefix}.idx", f"{prefix}.stats.json"]
    if chat:
        finals[2:2] = [f"{mask_prefix(prefix)}.bin", f"{mask_prefix(prefix)}.idx"]
    total_bytes = sum(Path(p).stat().st_size for p in config.inputs)
    started = time.perf_counter()
    documents = {str(path): 0 for path in config.inputs}
    inputs = [*config.inputs, config.tokenizer_dir]
    input_flags = ["--input"] * len(config.inputs) + ["--tokenizer"]
    with atomic_files(finals, overwrite=config.overwrite, inputs=inputs,
                      input_flags=input_flags, flags=["--output-prefix"] * len(finals)) as temps:
        token_builder = IndexedDatasetBuilder(str(temps[0]), dtype=dtype)
        mask_builder = IndexedDatasetBuilder(str(temps[2]), dtype=np.uint8) if chat else None
        try:
            with tqdm(total=total_bytes, unit="B", unit_scale=True, desc="preprocess",
                      disable=not config.show_progress) as bar:
                for encoded in _encoded_chunks(config):
                    for path, line_no, reason in encoded.errors:
                        error = BadRecordError(path, line_no, reason)
                        if not config.skip_bad:
                            raise error
                        result.skipped.add(str(error))
                    _write_chunk(encoded, token_builder, mask_builder, result)
                    documents[encoded.path] += len(encoded.lengths)
                    result.input_bytes += encoded.nbytes
                    bar.update(encoded.nbytes)
            for path, count in documents.items():
                if count == 0:  # an empty dataset fails training much later ("cannot mmap")
                    raise ValueError(f"{path}: empty corpus (no usable documents); an "
                                     "empty dataset cannot be trained on")
        finally:
            token_builder.data_file.close()
            if mask_builder is not None:
                mask_builder.data_file.close()
        token_builder.finalize(str(temps[1]))
        check_indexed_dataset(temps[0], temps[1], result.documents, result.tokens, prefix)
        if mask_builder is not None:
            mask_builder.finalize(str(temps[3]))
            check_indexed_dataset(temps[2], temps[3], result.documents, result.tokens,
                                  mask_prefix(prefix))
        result.seconds = time.perf_counter() - started
        stats = {**result.as_dict(), "mode": config.mode, "inputs": list(config.inputs),
                 "tokenizer_dir": str(config.tokenizer_dir), "vocab_size": tokenizer.vocab_size,
                 "append_eod": config.append_eod}
        Path(temps[-1]).write_text(json.dumps(stats, ensure_ascii=False, indent=2) + "\n",
                                   encoding="utf-8")
    return result


_IDX_MAGIC = b"MMIDIDX\x00\x00"  # Megatron's indexed-dataset header, version 1 follows


def check_indexed_dataset(bin_path: str | Path, idx_path: str | Path, documents: int,
                          tokens: int, name: str) -> None:
    """Before publishing: the ``.idx`` describes ``documents`` one-sequence documents and the
    ``.bin`` holds exactly their ``tokens`` (sizes from Megatron's format), else raise."""
    import struct

    from megatron.core.datasets.indexed_dataset import DType

    with open(idx_path, "rb") as handle:
        head = handle.read(34)
    if len(head) < 34 or head[:9] != _IDX_MAGIC or struct.unpack("<Q", head[9:17])[0] != 1:
        raise RuntimeError(f"{name}.idx: not a version-1 Megatron index as written")
    itemsize = DType.size(DType.dtype_from_code(head[17]))
    sequences, document_entries = struct.unpack("<QQ", head[18:34])
    idx_size = 34 + 12 * sequences + 8 * document_entries
    problems = []
    if sequences != documents or document_entries != documents + 1:
        problems.append(f"index lists {sequences} sequences / {document_entries - 1} documents, "
                        f"{documents} were written")
    if Path(idx_path).stat().st_size != idx_size:
        problems.append(f".idx holds {Path(idx_path).stat().st_size} bytes, its header implies "
                        f"{idx_size}")
    if Path(bin_path).stat().st_size != tokens * itemsize:
        problems.append(f".bin holds {Path(bin_path).stat().st_size} bytes, {tokens} tokens of "
                        f"{itemsize} bytes were written")
    if problems:
        raise RuntimeError(f"{name}: the dataset is inconsistent, not published: "
                           + "; ".join(problems))


def _write_chunk(encoded: _EncodedChunk, token_builder, mask_builder,
                 result: PreprocessResult) -> None:
    offset = 0
    for length in encoded.lengths:
        end = offset + length
        token_builder.add_document(encoded.tokens[offset:end], [length])
        if mask_builder is not None:
            doc_mask = encoded.masks[offset:end]
            mask_builder.add_document(doc_mask, [length])
            result.assistant_tokens += int(doc_mask.sum())
        offset = end
    result.documents += len(encoded.lengths)
    result.tokens += offset
