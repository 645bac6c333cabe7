"""Preference pairs: NeMo-Aligner's DPO JSONL -> tokenized chosen/rejected samples.

Format (one JSON object a line): ``prompt`` (a string, or a ``[{"role", "content"}, ...]``
conversation), ``chosen_response``, ``rejected_response``, optional ``chosen_reward`` /
``rejected_reward``. A string prompt becomes one user turn. Each response is appended as the
final assistant turn and the whole conversation is rendered in the EXAONE chat format; the
response tokens (the final assistant turn, ``[|endofturn|]`` included) are marked in a mask,
which the DPO family reads, while a reward model reads the last token of the sequence.

The source is map-style and deterministic (sample ``i`` depends on ``i`` and the seed only:
a seeded permutation per epoch), as the loop's exact resume requires. This module depends on
the data layer only; the objectives that read its samples live in the alignment package.

:func:`toy_preference_records` makes a small rule-checkable task from the shipped prompts:
the prompt asks for an answer in capital letters; the chosen response follows the
instruction, the rejected one (the same words in lower case) does not.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nemo_exaone.data.jsonl import (
    BadRecordError,
    get_messages,
    get_text,
    iter_records,
    require_file,
)

PAIR_KEYS = ("chosen", "rejected")
# data.too_long_documents for preference pairs: "truncate" is not one (see PreferenceSamples).
TOO_LONG_PAIRS = ("skip", "error")


@dataclass(frozen=True)
class PreferenceRecord:
    """One pair, as read from the JSONL (``where`` is ``file:line``, for error messages)."""

    messages: list[dict[str, str]]  # the prompt conversation (without the response)
    chosen: str
    rejected: str
    chosen_reward: float | None = None
    rejected_reward: float | None = None
    where: str = ""


def prompt_messages(prompt: Any, path: str | Path, line_no: int) -> list[dict[str, str]]:
    """A prompt string as one user turn; a message list as it is (validated)."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return get_messages({"prompt": prompt}, "prompt", path, line_no)


def _reward(record: dict, key: str, path: str | Path, line_no: int) -> float | None:
    value = record.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadRecordError(path, line_no, f"{key} must be a finite number, got {value!r}")
    return float(value)


def read_preference_jsonl(path: str | Path) -> list[PreferenceRecord]:
    """All pairs of a DPO JSONL file; the first bad line raises ``file:line: reason``."""
    records = []
    for line_no, record in iter_records(path, what="preference pairs"):
        if "prompt" not in record:
            raise BadRecordError(path, line_no, "missing key 'prompt'")
        records.append(PreferenceRecord(
            messages=prompt_messages(record["prompt"], path, line_no),
            chosen=get_text(record, "chosen_response", path, line_no),
            rejected=get_text(record, "rejected_response", path, line_no),
            chosen_reward=_reward(record, "chosen_reward", path, line_no),
            rejected_reward=_reward(record, "rejected_reward", path, line_no),
            where=f"{path}:{line_no}"))
    return records


@dataclass(frozen=True)
class EncodedResponse:
    ids: list[int]
    response_mask: list[int]  # 1 on the final assistant turn's tokens


def encode_conversation(tokenizer, messages: list[dict[str, str]], response: str,
                        chat_format: str = "exaone3") -> EncodedResponse:
    """Token ids of ``messages`` + the assistant ``response``, with the response marked
    (rendered in ``chat_format``, the model family's: see ``chat_format_for``)."""
    from nemo_exaone.data.chat_format import encode_chat

    prompt = encode_chat(tokenizer, messages, add_generation_prompt=True,
                         chat_format=chat_format).ids
    full = encode_chat(tokenizer, [*messages, {"role": "assistant", "content": response}],
                       chat_format=chat_format).ids
    if full[:len(prompt)] != prompt:  # the chat segments are encoded separately: never hit
        raise ValueError("the rendered prompt is not a prefix of prompt + response")
    return EncodedResponse(ids=full, response_mask=[0] * len(prompt)
                           + [1] * (len(full) - len(prompt)))


def _pad(values: list[int], length: int, pad: int) -> torch.Tensor:
    return torch.tensor(values + [pad] * (length - len(values)), dtype=torch.long)


class PreferenceSamples:
    """Tokenized pairs padded to ``seq_length`` (right padding with ``pad_id``).

    Sample fields, for each of ``chosen``/``rejected``: ``<k>_tokens`` [S], ``<k>_length``
    (number of real tokens), ``<k>_mask`` [S] (response tokens, shifted to label positions:
    position t is 1 when token t+1 is a response token), ``<k>_reward`` (NaN if absent).
    A pair whose prompt + chosen or prompt + rejected is longer than ``seq_length`` is never
    cut (a cut response would be compared without its end): ``too_long="error"`` refuses it
    (:class:`~nemo_exaone.config.errors.InputError` naming ``file:line``, both lengths and
    the settings to change), ``"skip"`` leaves it out and counts it in ``num_skipped``.
    """

    def __init__(self, records: list[PreferenceRecord], tokenizer, seq_length: int,
                 seed: int = 1234, shuffle: bool = True, chat_format: str = "exaone3",
                 too_long: str = "error") -> None:
        from nemo_exaone.config.errors import InputError

        if too_long not in TOO_LONG_PAIRS:
            raise ValueError(f"too_long must be one of {TOO_LONG_PAIRS}, got {too_long!r}")
        pad = tokenizer.pad_id if tokenizer.pad_id is not None else 0
        self.seed, self.shuffle, self.seq_length = seed, shuffle, seq_length
        self.path: str | None = None  # the JSONL, and the tokenizer, when built from files
        self.tokenizer_dir: str | None = getattr(tokenizer, "path", None)
        self.items: list[dict[str, torch.Tensor]] = []
        self.num_skipped = 0
        shortest_skipped: int | None = None
        for record in records:
            encoded = {key: encode_conversation(tokenizer, record.messages,
                                                getattr(record, key), chat_format)
                       for key in PAIR_KEYS}
            longest = max(len(enc.ids) for enc in encoded.values())
            if longest > seq_length:
                if too_long == "skip":
                    self.num_skipped += 1
                    shortest_skipped = longest if shortest_skipped is None \
                        else min(longest, shortest_skipped)
                    continue
                sizes = ", ".join(f"prompt + {key} response {len(enc.ids)} tokens"
                                  for key, enc in encoded.items())
                raise InputError(f"{record.where}: the pair does not fit train.seq_length="
                                 f"{seq_length} ({sizes}); raise train.seq_length, shorten "
                                 "or drop the pair, or set data.too_long_documents=skip")
            item: dict[str, torch.Tensor] = {}
            for key, enc in encoded.items():
                reward = getattr(record, f"{key}_reward")
                item[f"{key}_tokens"] = _pad(enc.ids, seq_length, pad)
                item[f"{key}_length"] = torch.tensor(len(enc.ids))
                item[f"{key}_mask"] = _pad(enc.response_mask[1:] + [0], seq_length, 0).float()
                item[f"{key}_reward"] = torch.tensor(float("nan") if reward is None
                                                     else reward)
            self.items.append(item)
        if records and not self.items:
            source = records[0].where.rpartition(":")[0] or "the preference data"
            raise InputError(f"{source}: none of its {len(records)} pairs fits "
                             f"train.seq_length={seq_length} (all skipped as too long; the "
                             f"shortest needs {shortest_skipped} tokens); raise "
                             "train.seq_length")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        epoch, offset = divmod(int(index), len(self.items))
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch]).permutation(len(self.items))
            offset = int(order[offset])
        return self.items[offset]


def collate_pairs(samples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """B pairs -> one batch of 2B sequences, the B chosen first, then the B rejected.

    ``tokens``/``position_ids`` [2B, S], ``lengths`` [2B], ``response_mask`` [2B, S] (label
    positions), ``rewards`` [2B], ``ref_sums`` [2B, 2] when the items carry a reference
    cache; ``labels`` [2B, S] are the tokens shifted left (the last
    position repeats the pad, masked out).
    """
    def both(field: str) -> torch.Tensor:
        return torch.stack([s[f"{k}_{field}"] for k in PAIR_KEYS for s in samples])

    tokens = both("tokens")
    labels = torch.cat([tokens[:, 1:], tokens[:, -1:]], dim=1)
    positions = torch.arange(tokens.shape[1]).unsqueeze(0).expand_as(tokens).contiguous()
    batch = {"tokens": tokens, "labels": labels, "position_ids": positions,
             "lengths": both("length"), "response_mask": both("mask"),
             "rewards": both("reward").float()}
    if "chosen_ref_sums" in samples[0]:  # cached reference log-probs (DPO)
        batch["ref_sums"] = both("ref_sums").float()
    return batch


# ------------------------------------------------------------------ toy rule-checkable task
TOY_INSTRUCTION = " Answer in capital letters."
_TOY_TEMPLATES = (
    "here is a short answer about this: {topic}",
    "i would start with the basics of {topic}",
    "a simple way to think about {topic} is to try it yourself",
)


def follows_toy_rule(response: str) -> bool:
    """The toy task's rule: the answer is written in capital letters."""
    letters = [c for c in response if c.isalpha()]
    return bool(letters) and all(c.isupper() for c in letters)


def toy_preference_records(prompts_path: str | Path | None = None) -> Iterator[dict]:
    """DPO JSONL records of the toy task, made from the shipped English prompts."""
    from nemo_exaone.data.assets import asset_paths

    path = Path(prompts_path) if prompts_path else asset_paths()["preference_prompts"]
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        if record.get("lang") != "en":
            continue
        topic = record["prompt"].rstrip(".?!").lower()
        for i, template in enumerate(_TOY_TEMPLATES):
            answer = template.format(topic=" ".join(topic.split()[-4:])) + "."
            yield {"id": f"{record['id']}-{i}", "prompt": record["prompt"] + TOY_INSTRUCTION,
                   "chosen_response": answer.upper(), "rejected_response": answer}


def write_toy_preferences(target: str | Path) -> Path:
    """Write the toy task's JSONL atomically (same content every time; kept if present)."""
    from nemo_exaone.runtime.outputs import write_text_atomic

    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in toy_preference_records())
    target = Path(target)
    if target.is_file() and target.read_text(encoding="utf-8") == text:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(target, text)
    return target


def build_preference_source(data, seq_length: int, arch, prepare_dir: Path
                            ) -> tuple[PreferenceSamples, str, str]:
    """(samples, JSONL path, tokenizer dir) for ``data.source=preference``.

    ``data.preference_file`` null: the toy pairs are written to ``<prepare_dir>/
    toy_preferences.jsonl``; ``data.tokenizer_dir`` null: the tiny tokenizer is trained (or
    reused) under ``prepare_dir``, as the shipped corpus preparation does. A pair too long
    for ``seq_length`` is skipped (counted) or refused by ``data.too_long_documents``.
    """
    from nemo_exaone.data.assets import build_tiny_tokenizer
    from nemo_exaone.data.tokenizer import load_tokenizer

    path = Path(data.preference_file) if data.preference_file \
        else write_toy_preferences(Path(prepare_dir) / "toy_preferences.jsonl")
    require_file(path, "data.preference_file=")
    # The shipped-corpus preparation trains the same tokenizer (same data, same size), so a
    # tiny model pretrained on the shipped corpus and its preference stages share it.
    tokenizer_dir = data.tokenizer_dir or str(build_tiny_tokenizer(
        prepare_dir, vocab_size=arch.vocab_size))
    tokenizer = load_tokenizer(tokenizer_dir)
    if tokenizer.vocab_size > arch.vocab_size:
        raise ValueError(f"tokenizer {tokenizer_dir} has {tokenizer.vocab_size} tokens but the "
                         f"model's vocab_size is {arch.vocab_size}")
    from nemo_exaone.data.chat_format import chat_format_for

    # The model family's chat format: EXAONE 4.0 policies are aligned in the 4.0 format.
    samples = PreferenceSamples(read_preference_jsonl(path), tokenizer, seq_length,
                                seed=data.seed, shuffle=data.shuffle,
                                chat_format=chat_format_for(arch.model_type),
                                too_long=data.too_long_documents)
    samples.path, samples.tokenizer_dir = str(path), str(tokenizer_dir)
    return samples, str(path), str(tokenizer_dir)
