"""The data shipped with the package (``nemo_exaone/assets/data``) and a tiny tokenizer.

Tests and the CPU demo must run offline, so the project ships a small bilingual corpus, a
toy benchmark test set (with two items leaked into the corpus), a chat SFT set and
preference prompts; see ``assets/data/README.md``.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = ["ASSET_DIR", "asset_paths", "build_tiny_tokenizer", "tiny_tokenizer_texts"]

ASSET_DIR = Path(__file__).resolve().parent.parent / "assets" / "data"
_TINY_TOKENIZER_FORMAT = 1  # bump when the training recipe below changes


def asset_paths() -> dict[str, Path]:
    """Paths of the shipped files by name: corpus, benchmark_test, chat_sft, preference_prompts."""
    names = ("corpus", "benchmark_test", "chat_sft", "preference_prompts")
    return {name: ASSET_DIR / f"{name}.jsonl" for name in names}


def tiny_tokenizer_texts() -> Iterator[str]:
    """The corpus texts, then every message of the chat set (the tiny tokenizer's input)."""
    paths = asset_paths()
    with open(paths["corpus"], encoding="utf-8") as handle:
        for line in handle:
            yield json.loads(line)["text"]
    with open(paths["chat_sft"], encoding="utf-8") as handle:
        for line in handle:
            for message in json.loads(line)["messages"]:
                yield message["content"]


def build_tiny_tokenizer(cache_dir: str | Path, vocab_size: int = 1024,
                         morph_analyzer: str = "none") -> Path:
    """Train (or reuse from ``cache_dir``) a small EXAONE-style tokenizer on the shipped data.

    The cache key covers the data, the vocabulary size, the analyser and the recipe version,
    so a stale tokenizer is never reused. Returns the tokenizer directory.
    """
    from nemo_exaone.data.tokenizer_training import train_tokenizer_from_texts
    from nemo_exaone.runtime.outputs import OutputLockedError

    digest = hashlib.sha256()
    for name in ("corpus", "chat_sft"):
        digest.update(asset_paths()[name].read_bytes())
    key = f"{digest.hexdigest()[:12]}-v{vocab_size}-{morph_analyzer}-f{_TINY_TOKENIZER_FORMAT}"
    target = Path(cache_dir) / f"tiny-exaone-tokenizer-{key}"
    deadline = time.monotonic() + 600
    while not (target / "tokenizer.json").is_file():
        try:
            # overwrite: a cache entry without tokenizer.json is not a tokenizer.
            return train_tokenizer_from_texts(
                tiny_tokenizer_texts(), target, vocab_size=vocab_size, min_frequency=2,
                morph_analyzer=morph_analyzer, model_max_length=4096, overwrite=True)
        except OutputLockedError:
            # Another process is building the same entry (a few seconds): wait and share it.
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    return target
