"""Prepare the bilingual corpus bundled with the package for the tiny CPU configs.

``nemo_exaone/assets/data/corpus.jsonl`` (Korean/English, tagged by ``source``) is split
by topic into the data of three stages, so the stage chain sees what EXAONE's recipe
describes, in miniature:

- ``pretrain`` (stage a): stories, essays, facts: general text;
- ``continued`` (stage b): arithmetic and calendar text, the "weak domains" of the demo;
  stage (b) replays the ``pretrain`` split at ``data.replay_fraction``;
- ``hq`` (stage c, annealing): the hand-written essays and facts.

The two ``quiz`` documents carry the deliberately leaked benchmark items (see the assets
README) and are left out of every split; the data module's decontamination is the tool that
finds such leaks in real corpora.

Everything is made once under ``prepare_dir/shipped-<key>/`` (the key hashes the corpus,
the split recipe and the vocabulary size): the tiny tokenizer
(:func:`nemo_exaone.data.assets.build_tiny_tokenizer`), one JSONL and one Megatron indexed
dataset (:func:`nemo_exaone.data.preprocess.preprocess`) per split. The directory appears
atomically (:mod:`nemo_exaone.runtime.outputs`), so a killed preparation is redone, never
half-used; every stage that names the same ``prepare_dir`` reuses it, and so trains with the
same tokenizer. The training loop's adapter (``training/data_sources.py``) turns the result
into its data settings; this module takes and returns plain values.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

SPLIT_SOURCES: dict[str, tuple[str, ...]] = {
    "pretrain": ("story", "essay", "facts"),
    "continued": ("arithmetic", "calendar"),
    "hq": ("essay", "facts"),
}
_RECIPE_VERSION = 1
MAX_SHIPPED_VOCAB = 4096  # the corpus is far too small for a larger tokenizer


def _key(corpus: Path, vocab_size: int) -> str:
    digest = hashlib.sha256(corpus.read_bytes())
    digest.update(json.dumps(SPLIT_SOURCES, sort_keys=True).encode())
    return f"{digest.hexdigest()[:12]}-v{vocab_size}-r{_RECIPE_VERSION}"


def _prepare(target: Path, corpus: Path, vocab_size: int) -> None:
    from nemo_exaone.data.assets import build_tiny_tokenizer
    from nemo_exaone.data.preprocess import PreprocessConfig, preprocess
    from nemo_exaone.runtime.outputs import atomic_directory

    # overwrite: a directory without its tokenizer is an unfinished one (never published by
    # this code; left by an older version); the lock makes a concurrent preparer wait its turn
    # by refusing, naming the holder.
    with atomic_directory(target, overwrite=True, flag="shipped data") as tmp:
        tokenizer = build_tiny_tokenizer(tmp, vocab_size=vocab_size)
        (tmp / "tokenizer").symlink_to(tokenizer.name)
        records = [json.loads(line) for line in corpus.read_text(encoding="utf-8").splitlines()
                   if line.strip()]
        for split, sources in SPLIT_SOURCES.items():
            jsonl = tmp / f"{split}.jsonl"
            jsonl.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records
                                     if r.get("source") in sources), encoding="utf-8")
            preprocess(PreprocessConfig(inputs=[str(jsonl)], output_prefix=str(tmp / split),
                                        tokenizer_dir=str(tokenizer), workers=0,
                                        show_progress=False))
    # The tokenizer link is relative, so it survives the rename of the directory.


def shipped_dir(prepare_dir: Path, vocab_size: int) -> Path:
    """Where the shipped corpus is prepared for a model of ``vocab_size`` tokens."""
    from nemo_exaone.data.assets import asset_paths

    corpus = asset_paths()["corpus"]
    if not corpus.is_file():
        raise FileNotFoundError(f"the shipped corpus {corpus} is missing from this install")
    vocab = min(vocab_size, MAX_SHIPPED_VOCAB)
    return prepare_dir / f"shipped-{_key(corpus, vocab)}"


@dataclass(frozen=True)
class ShippedData:
    """The prepared corpus: its tokenizer and one indexed-dataset prefix per split."""

    root: Path

    @property
    def tokenizer_dir(self) -> Path:
        return self.root / "tokenizer"

    def prefix(self, split: str) -> Path:
        if split not in SPLIT_SOURCES:
            raise ValueError(f"shipped split {split!r}: choose one of {', '.join(SPLIT_SOURCES)}")
        return self.root / split


def prepare_shipped_data(prepare_dir: Path, vocab_size: int) -> ShippedData:
    """Prepare (once; cached by content) the shipped corpus for ``vocab_size``."""
    from nemo_exaone.data.assets import asset_paths

    target = shipped_dir(prepare_dir, vocab_size)
    if not (target / "tokenizer" / "tokenizer.json").is_file():
        _prepare(target, asset_paths()["corpus"], min(vocab_size, MAX_SHIPPED_VOCAB))
    return ShippedData(target)
