"""Train an EXAONE-style byte-level BPE tokenizer and save it as a Hugging Face directory.

The directory holds ``tokenizer.json`` (loaded by :mod:`nemo_exaone.data.tokenizer` and by
``transformers.AutoTokenizer``), ``vocab.json`` + ``merges.txt`` (EXAONE's GPT2Tokenizer
layout) and ``tokenizer_config.json`` with the special tokens and the EXAONE chat template.
Role tags (``[|user|]`` ...) stay plain text, as in EXAONE; only ``[|endofturn|]``,
``[BOS]``, ``[PAD]`` and ``[UNK]`` are special tokens.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from nemo_exaone.data.chat_format import CHAT_TEMPLATE
from nemo_exaone.data.jsonl import SkipStats, iter_texts
from nemo_exaone.data.morphology import load_morpheme_splitter
from nemo_exaone.data.tokenizer import (
    BOS_TOKEN,
    EOT_TOKEN,
    PAD_TOKEN,
    SPECIAL_TOKENS,
    UNK_TOKEN,
)
from nemo_exaone.runtime.outputs import atomic_directory, check_output, refuse_overlap

__all__ = ["TokenizerTrainingConfig", "train_tokenizer", "train_tokenizer_from_texts"]


@dataclass
class TokenizerTrainingConfig:
    """What to train on and how: defaults match EXAONE 3.x (vocab 102,400, MeCab-split Korean)."""

    inputs: list[str]
    output_dir: str
    text_key: str = "text"
    vocab_size: int = 102_400
    min_frequency: int = 2
    morph_analyzer: str = "none"  # "mecab" | "kiwi" | "none"
    model_max_length: int = 32_768
    skip_bad: bool = False
    show_progress: bool = True
    overwrite: bool = False  # replace an existing non-empty output directory
    stats: dict = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        if self.vocab_size < 256 + len(SPECIAL_TOKENS):
            raise ValueError(
                f"vocab_size must be at least {256 + len(SPECIAL_TOKENS)} "
                "(256 byte tokens plus the special tokens)"
            )
        if not self.inputs:
            raise ValueError("no training input given")


def _configure_for_saving(tokenizer: Tokenizer) -> None:
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = None


def _write_hf_files(tokenizer: Tokenizer, directory: Path, model_max_length: int) -> None:
    tokenizer.save(str(directory / "tokenizer.json"))
    tokenizer.model.save(str(directory))  # vocab.json + merges.txt
    added = {
        str(tokenizer.token_to_id(tok)): {
            "content": tok,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for tok in SPECIAL_TOKENS
    }
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "added_tokens_decoder": added,
        "bos_token": BOS_TOKEN,
        "eos_token": EOT_TOKEN,
        "pad_token": PAD_TOKEN,
        "unk_token": UNK_TOKEN,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": model_max_length,
        "chat_template": CHAT_TEMPLATE,
    }
    (directory / "tokenizer_config.json").write_text(
        json.dumps(config, ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
    )
    special_map = {
        "bos_token": BOS_TOKEN,
        "eos_token": EOT_TOKEN,
        "pad_token": PAD_TOKEN,
        "unk_token": UNK_TOKEN,
    }
    (directory / "special_tokens_map.json").write_text(
        json.dumps(special_map, indent=2) + "\n", encoding="utf-8"
    )


def train_tokenizer_from_texts(
    texts: Iterable[str],
    output_dir: str | Path,
    vocab_size: int = 102_400,
    min_frequency: int = 2,
    morph_analyzer: str = "none",
    model_max_length: int = 32_768,
    show_progress: bool = False,
    overwrite: bool = False,
    inputs: Sequence[str | os.PathLike] = (),
) -> Path:
    """Train byte-level BPE on ``texts`` and write the tokenizer directory atomically.

    ``inputs`` (the files ``texts`` come from) must not be ``output_dir`` or inside it; that
    and an existing non-empty ``output_dir`` without ``overwrite`` are refused before
    training.
    """
    input_flags = ["--input"] * len(inputs)
    refuse_overlap(output_dir, inputs, output_flag="--output", input_flags=input_flags)
    check_output(output_dir, overwrite, flag="--output")
    splitter = load_morpheme_splitter(morph_analyzer)
    tokenizer = Tokenizer(models.BPE())  # no unk: byte-level covers every input
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    if splitter is None:
        tokenizer.pre_tokenizer = byte_level
    else:
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.PreTokenizer.custom(splitter), byte_level]
        )
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress,
    )
    tokenizer.train_from_iterator(texts, trainer)
    _configure_for_saving(tokenizer)  # drops the (unserializable) morpheme splitter
    with atomic_directory(output_dir, overwrite=overwrite, inputs=inputs,
                          input_flags=input_flags, flag="--output") as temp_dir:
        _write_hf_files(tokenizer, temp_dir, model_max_length)
    return Path(output_dir)


def train_tokenizer(config: TokenizerTrainingConfig) -> dict:
    """Train from JSONL/``.txt`` inputs (see :class:`TokenizerTrainingConfig`); return a report."""
    skipped = SkipStats()
    counted = {"documents": 0, "characters": 0}

    def documents() -> Iterable[str]:
        for path in config.inputs:
            before = counted["documents"]
            for text in iter_texts([path], key=config.text_key, skip_bad=config.skip_bad,
                                   stats=skipped):
                counted["documents"] += 1
                counted["characters"] += len(text)
                yield text
            if counted["documents"] == before:
                raise ValueError(f"{path}: empty corpus (no usable text under key "
                                 f"{config.text_key!r}); nothing to train a tokenizer on")

    out = train_tokenizer_from_texts(
        documents(),
        config.output_dir,
        vocab_size=config.vocab_size,
        min_frequency=config.min_frequency,
        morph_analyzer=config.morph_analyzer,
        model_max_length=config.model_max_length,
        show_progress=config.show_progress,
        overwrite=config.overwrite,
        inputs=config.inputs,
    )
    trained = Tokenizer.from_file(str(out / "tokenizer.json"))
    return {
        "output_dir": str(out),
        "vocab_size": trained.get_vocab_size(with_added_tokens=True),
        "requested_vocab_size": config.vocab_size,
        "morph_analyzer": config.morph_analyzer,
        **counted,
        **skipped.as_dict(),
    }
