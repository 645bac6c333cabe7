"""Chat SFT data: JSONL conversations -> packed samples with loss on assistant tokens only.

One JSON object a line, in any of three formats (detected per line by its keys):

* messages (OpenAI / TRL "conversational language modeling"):
  ``{"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]}``;
  every assistant turn is trained.
* NeMo-Aligner SFT chat: ``{"system": str, "conversations": [{"from": "User"|"Assistant",
  "value": str, ...}, ...], "mask": "User"}``; ``mask`` names the role whose turns carry no
  loss, and the EXAONE chat format trains assistant turns only, so ``"User"`` (or absent)
  is accepted and anything else is refused. Other keys (``label``, ``type``, ...) are
  ignored.
* TRL conversational prompt-completion: ``{"prompt": [messages], "completion": [messages]}``
  (strings are taken as one user / one assistant turn); only the completion's assistant
  turns are trained, as TRL's completion-only loss does.

Conversations are rendered in the model family's EXAONE chat format (3.x or 4.0, from the
architecture's ``model_type``; :mod:`nemo_exaone.data.chat_format`): a trained assistant turn
contributes its content and ``[|endofturn|]`` to the loss, nothing else does. A bad line stops the read with ``file:line: reason``.

:class:`ChatSFTSamples` packs whole conversations (never cut, unless ``too_long=truncate``)
into ``seq_length``-token samples with ``document_ids``, so the objective keeps packed
conversations from attending to each other (:mod:`nemo_exaone.model.packed_attention`).
Sample ``i`` depends only on ``i`` and the seed (exact resume).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nemo_exaone.config.errors import InputError
from nemo_exaone.data.chat_format import ROLES, chat_format_for, chat_segments
from nemo_exaone.data.jsonl import BadRecordError, check_text, iter_records
from nemo_exaone.data.packing import next_fit, pack_sample

__all__ = ["Conversation", "parse_conversation", "read_chat_jsonl", "encode_conversation",
           "ChatSFTSamples", "build_chat_source"]

_TOO_LONG = ("skip", "truncate", "error")
_FORMATS_HINT = ("expected 'messages' (a message list), NeMo-Aligner's 'conversations' (with "
                 "'system' and 'mask'), or TRL's 'prompt' + 'completion'")


@dataclass(frozen=True)
class Conversation:
    """One chat: its messages and, per message, whether its tokens are trained."""

    messages: list[dict[str, str]]
    trained: list[bool]
    where: str = ""  # file:line


def _messages(value: Any, key: str, path, line_no: int, string_role: str | None = None
              ) -> list[dict[str, str]]:
    if isinstance(value, str) and string_role:
        return [{"role": string_role, "content": check_text(value, key, path, line_no)}]
    if not isinstance(value, list) or not value:
        raise BadRecordError(path, line_no, f"{key!r} must be a non-empty list of messages")
    out = []
    for index, message in enumerate(value):
        if not isinstance(message, dict):
            raise BadRecordError(path, line_no, f"{key}[{index}] must be an object")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise BadRecordError(path, line_no, f"{key}[{index}].role must be one of "
                                 f"{', '.join(ROLES)}, got {role!r}")
        if not isinstance(content, str):
            raise BadRecordError(path, line_no, f"{key}[{index}].content must be a string, "
                                 f"got {type(content).__name__}")
        check_text(content, f"{key}[{index}].content", path, line_no)
        out.append({"role": role, "content": content})
    return out


def _nemo_aligner(record: dict, path, line_no: int) -> tuple[list[dict], list[bool]]:
    mask = record.get("mask", "User")
    if not isinstance(mask, str) or mask.lower() != "user":
        raise BadRecordError(path, line_no, f"mask={mask!r}: the EXAONE chat format trains the "
                             "assistant turns only, so the masked role must be 'User'")
    system = record.get("system") or ""
    if not isinstance(system, str):
        raise BadRecordError(path, line_no, "'system' must be a string")
    turns = record["conversations"]
    if not isinstance(turns, list) or not turns:
        raise BadRecordError(path, line_no, "'conversations' must be a non-empty list")
    messages = [{"role": "system", "content": check_text(system, "system", path, line_no)}] \
        if system else []
    for index, turn in enumerate(turns):
        speaker = turn.get("from") if isinstance(turn, dict) else None
        role = speaker.lower() if isinstance(speaker, str) else None
        if role not in ("user", "assistant"):
            raise BadRecordError(path, line_no, f"conversations[{index}].from must be 'User' "
                                 f"or 'Assistant', got {speaker!r}")
        value = turn.get("value")
        if not isinstance(value, str):
            raise BadRecordError(path, line_no, f"conversations[{index}].value must be a "
                                 "string")
        messages.append({"role": role,
                         "content": check_text(value, f"conversations[{index}].value", path,
                                               line_no)})
    return messages, [m["role"] == "assistant" for m in messages]


def parse_conversation(record: dict, path: str | Path = "<record>", line_no: int = 0
                       ) -> Conversation:
    """A record of any supported format (see the module doc) as a :class:`Conversation`."""
    if "conversations" in record:
        messages, trained = _nemo_aligner(record, path, line_no)
    elif "prompt" in record and "completion" in record:
        prompt = _messages(record["prompt"], "prompt", path, line_no, string_role="user")
        completion = _messages(record["completion"], "completion", path, line_no,
                               string_role="assistant")
        messages = prompt + completion
        trained = [False] * len(prompt) + [m["role"] == "assistant" for m in completion]
    elif "messages" in record:
        messages = _messages(record["messages"], "messages", path, line_no)
        trained = [m["role"] == "assistant" for m in messages]
    else:
        raise BadRecordError(path, line_no, f"no conversation: {_FORMATS_HINT}")
    if not any(trained):
        raise BadRecordError(path, line_no, "no assistant turn to train on")
    return Conversation(messages=messages, trained=trained, where=f"{path}:{line_no}")


def read_chat_jsonl(paths: Sequence[str | Path]) -> list[Conversation]:
    """Every conversation of the files, in order; the first bad line raises ``file:line``."""
    out: list[Conversation] = []
    for path in paths:
        for line_no, record in iter_records(path, what="conversations"):
            out.append(parse_conversation(record, path, line_no))
    return out


def encode_conversation(tokenizer, conversation: Conversation, chat_format: str = "exaone3"
                        ) -> tuple[list[int], list[int]]:
    """Token ids of the rendered conversation and its 0/1 loss mask.

    The EXAONE chat segments (``chat_format``: the model family's, see
    :func:`~nemo_exaone.data.chat_format.chat_format_for`) alternate untrained / assistant
    pieces, one assistant piece per assistant message in order; a piece is trained when its
    message is.
    """
    segments = chat_segments(conversation.messages, chat_format=chat_format)
    flags = iter([t for m, t in zip(conversation.messages, conversation.trained, strict=True)
                  if m["role"] == "assistant"])
    encoded = tokenizer.encode_batch([text for text, _ in segments])
    ids: list[int] = []
    mask: list[int] = []
    for (_, is_assistant), piece in zip(segments, encoded, strict=True):
        trained = next(flags) if is_assistant else False
        ids.extend(piece)
        mask.extend([int(trained)] * len(piece))
    return ids, mask


class ChatSFTSamples:
    """Tokenized conversations packed into samples of ``seq_length`` tokens.

    Fields per sample: ``tokens``, ``labels``, ``loss_mask`` (trained assistant tokens of the
    same conversation), ``position_ids`` (restarting per conversation), ``document_ids``
    (the conversation's index, -1 on padding). A conversation longer than ``seq_length + 1``
    tokens is skipped (counted), truncated, or refused naming its line (``too_long``).
    """

    def __init__(self, conversations: Sequence[Conversation], tokenizer, seq_length: int,
                 seed: int = 1234, shuffle: bool = True, pack: bool = True,
                 too_long: str = "skip", chat_format: str = "exaone3") -> None:
        if too_long not in _TOO_LONG:
            raise ValueError(f"too_long must be one of {_TOO_LONG}, got {too_long!r}")
        capacity = seq_length + 1
        self.seq_length, self.seed, self.shuffle = seq_length, seed, shuffle
        self.pad_id = tokenizer.pad_id if tokenizer.pad_id is not None else 0
        self.pieces: list[tuple[list[int], list[int]]] = []
        self.num_skipped = self.num_truncated = 0
        for conversation in conversations:
            ids, mask = encode_conversation(tokenizer, conversation, chat_format)
            if len(ids) > capacity:
                if too_long == "error":
                    raise InputError(f"{conversation.where}: {len(ids)} tokens > "
                                     f"train.seq_length + 1 = {capacity}; raise "
                                     "train.seq_length or set data.too_long_documents=skip "
                                     "or truncate")
                if too_long == "skip":
                    self.num_skipped += 1
                    continue
                ids, mask = ids[:capacity], mask[:capacity]
                self.num_truncated += 1
            self.pieces.append((ids, mask))
        if not self.pieces:
            raise InputError(f"no conversation fits train.seq_length={seq_length} "
                             f"({self.num_skipped} skipped as too long); raise "
                             "train.seq_length or set data.too_long_documents=truncate")
        order = np.arange(len(self.pieces))
        if shuffle:
            order = np.random.default_rng(seed).permutation(len(self.pieces))
        lengths = [len(ids) for ids, _ in self.pieces]
        self.packs = next_fit(lengths, order, capacity) if pack else [[int(i)] for i in order]

    @property
    def fill_ratio(self) -> float:
        """Fraction of token slots holding conversation tokens (the rest is padding)."""
        used = sum(len(ids) for ids, _ in self.pieces)
        return used / (len(self.packs) * (self.seq_length + 1))

    def __len__(self) -> int:
        return len(self.packs)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        epoch, offset = divmod(int(index), len(self.packs))
        if self.shuffle:
            offset = int(np.random.default_rng([self.seed, epoch]).permutation(
                len(self.packs))[offset])
        pack = self.packs[offset]
        return pack_sample([self.pieces[i] for i in pack], self.seq_length, self.pad_id,
                           segment_ids=pack)


def build_chat_source(data, seq_length: int, arch, prepare_dir: Path
                      ) -> tuple[ChatSFTSamples, list[str], str]:
    """(samples, JSONL paths, tokenizer dir) for ``data.source=chat``.

    ``data.chat_files`` empty: the shipped ``chat_sft.jsonl``; ``data.tokenizer_dir`` null:
    the tiny tokenizer trained (or reused) under ``prepare_dir``, the one the shipped-corpus
    preparation makes, so a tiny pretraining run and its SFT share it.
    """
    from nemo_exaone.data.assets import asset_paths, build_tiny_tokenizer
    from nemo_exaone.data.tokenizer import load_tokenizer

    paths = [str(p) for p in data.chat_files] or [str(asset_paths()["chat_sft"])]
    tokenizer_dir = data.tokenizer_dir or str(build_tiny_tokenizer(
        prepare_dir, vocab_size=arch.vocab_size))
    tokenizer = load_tokenizer(tokenizer_dir)
    if tokenizer.vocab_size > arch.vocab_size:
        raise ValueError(f"tokenizer {tokenizer_dir} has {tokenizer.vocab_size} tokens but the "
                         f"model's vocab_size is {arch.vocab_size}")
    # The model family's chat format: EXAONE 4.0 models are fine-tuned in the 4.0 format.
    samples = ChatSFTSamples(read_chat_jsonl(paths), tokenizer, seq_length, seed=data.seed,
                             shuffle=data.shuffle, pack=data.pack_documents,
                             too_long=data.too_long_documents,
                             chat_format=chat_format_for(arch.model_type))
    return samples, paths, str(tokenizer_dir)
