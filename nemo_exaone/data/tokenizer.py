"""Load an EXAONE byte-level BPE tokenizer from a local Hugging Face directory.

Accepts what EXAONE checkpoints ship: ``tokenizer.json``, or ``vocab.json`` + ``merges.txt``
(GPT2Tokenizer layout). Only the Rust ``tokenizers`` library is needed at run time, so data
preprocessing works without ``transformers``. EXAONE prepends no BOS: ``encode`` adds nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

__all__ = [
    "BOS_TOKEN",
    "EOT_TOKEN",
    "PAD_TOKEN",
    "UNK_TOKEN",
    "SPECIAL_TOKENS",
    "ExaoneTokenizer",
    "load_tokenizer",
]

BOS_TOKEN = "[BOS]"
EOT_TOKEN = "[|endofturn|]"  # EXAONE's eos and the document separator (EOD) in pretraining data
PAD_TOKEN = "[PAD]"
UNK_TOKEN = "[UNK]"
SPECIAL_TOKENS: tuple[str, ...] = (PAD_TOKEN, BOS_TOKEN, EOT_TOKEN, UNK_TOKEN)


def _special_tokens_from_config(directory: Path) -> list[str]:
    """Special tokens declared by ``tokenizer_config.json`` / ``special_tokens_map.json``."""
    found: list[str] = []
    config_path = directory / "tokenizer_config.json"
    if config_path.is_file():
        config = json.loads(config_path.read_text(encoding="utf-8"))
        for entry in (config.get("added_tokens_decoder") or {}).values():
            if isinstance(entry, dict) and entry.get("special", False) and "content" in entry:
                found.append(entry["content"])
    map_path = directory / "special_tokens_map.json"
    if map_path.is_file():
        for value in json.loads(map_path.read_text(encoding="utf-8")).values():
            content = value.get("content") if isinstance(value, dict) else value
            if isinstance(content, str):
                found.append(content)
    return found


def _load_backend(directory: Path) -> Tokenizer:
    tokenizer_json = directory / "tokenizer.json"
    if tokenizer_json.is_file():
        return Tokenizer.from_file(str(tokenizer_json))
    vocab, merges = directory / "vocab.json", directory / "merges.txt"
    if vocab.is_file() and merges.is_file():
        backend = Tokenizer(models.BPE.from_file(str(vocab), str(merges)))
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        backend.decoder = decoders.ByteLevel()
        specials = dict.fromkeys(_special_tokens_from_config(directory) + list(SPECIAL_TOKENS))
        present = [tok for tok in specials if backend.token_to_id(tok) is not None]
        backend.add_special_tokens([AddedToken(tok, special=True) for tok in present])
        return backend
    raise FileNotFoundError(
        f"{directory}: no tokenizer.json, and no vocab.json + merges.txt pair"
    )


@dataclass(frozen=True)
class ExaoneTokenizer:
    """A byte-level BPE tokenizer with EXAONE's special tokens resolved to ids."""

    backend: Tokenizer
    path: str
    eot_id: int
    pad_id: int | None
    bos_id: int | None
    unk_id: int | None

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> ExaoneTokenizer:
        directory = Path(directory)
        if not directory.is_dir():
            raise FileNotFoundError(f"{directory}: tokenizer directory not found")
        backend = _load_backend(directory)
        eot_id = backend.token_to_id(EOT_TOKEN)
        if eot_id is None:
            raise ValueError(f"{directory}: not an EXAONE tokenizer (no {EOT_TOKEN} token)")
        return cls(
            backend=backend,
            path=str(directory),
            eot_id=eot_id,
            pad_id=backend.token_to_id(PAD_TOKEN),
            bos_id=backend.token_to_id(BOS_TOKEN),
            unk_id=backend.token_to_id(UNK_TOKEN),
        )

    @property
    def eod_id(self) -> int:
        """End-of-document id appended by preprocessing: EXAONE's ``[|endofturn|]``."""
        return self.eot_id

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        return self.backend.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.backend.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)


def load_tokenizer(directory: str | Path) -> ExaoneTokenizer:
    """Load the EXAONE tokenizer stored in ``directory`` (see :class:`ExaoneTokenizer`)."""
    return ExaoneTokenizer.from_pretrained(directory)
