"""A rule-checkable instruction-following task: evidence that preference optimization works.

Every prompt asks about a topic and carries one instruction a rule can check:

- case:   "Answer in capital letters." / "Answer in small letters."
- ending: "End your answer with the word W." (W one of :data:`END_WORDS`)
- length: "Answer in exactly three words." / "... six words."

The chosen response follows the instruction; the rejected one is the same answer made to
break it (the other case, another final word, the other length), so a pair differs only in
what the rule checks. Each instruction has opposite variants in equal numbers, so a model
that ignores the instruction prefers chosen about half the time: the preference must be
learned by reading the instruction, not by a global habit (always upper case), which the
older one-instruction toy task (:func:`..preference_data.toy_preference_records`) allowed.

The SFT data (:func:`sft_records`) answers the same kind of prompts and follows the
instruction only with probability ``compliance`` (0.5 by default): the SFT model M0 can
answer in every style but has no reason to pick the instructed one; DPO/SimPO have to teach
it. Held-out prompts use topics and question phrasings that no preference pair uses and
phrasings no SFT chat uses (the SFT chats mention the held-out topics, so M0 knows the
words). Everything is generated here,
deterministically from a seed; nothing is downloaded.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

TASK_NAME = "instructions"
TASK_FORMAT = 3  # bump when the pair generator changes (part of the file names)
SFT_FORMAT = 2  # bump when the SFT chats change (M0 depends on them alone)

# Single tokens of the tiny tokenizer (so answers stay short); disjoint train/held-out topics.
TRAIN_TOPICS = ("river", "city", "house", "school", "water", "music", "book", "tree",
                "mountain", "market", "library", "museum", "park", "train", "window",
                "flower", "dog", "cat", "apple", "bread", "tea", "rain", "snow", "wind", "sun")
HELDOUT_TOPICS = ("moon", "star", "station", "beach", "morning", "night", "friend", "teacher",
                  "computer", "car")
QUESTIONS = ("Tell me about the {topic}.", "What do you think of the {topic}?",
             "Describe the {topic}.")
HELDOUT_QUESTIONS = ("Say something about the {topic}.", "How would you describe the {topic}?")
FILLER = ("is", "very", "old", "new", "small", "calm", "long", "short", "happy", "and",
          "with", "cold", "warm", "green")
END_WORDS = ("yes", "no", "again", "today")
LENGTHS = {3: "three", 6: "six"}

_CASE = {"upper": "Answer in capital letters.", "lower": "Answer in small letters."}
_END = "End your answer with the word {word}."
_LENGTH = "Answer in exactly {name} words."


@dataclass(frozen=True)
class Instruction:
    """One checkable instruction: ``rule`` (case | ending | length) and its argument."""

    rule: str
    arg: str  # upper/lower | the final word | the word count

    @property
    def text(self) -> str:
        if self.rule == "case":
            return _CASE[self.arg]
        if self.rule == "ending":
            return _END.format(word=self.arg)
        return _LENGTH.format(name=LENGTHS[int(self.arg)])


INSTRUCTIONS = tuple([Instruction("case", a) for a in _CASE]
                     + [Instruction("ending", w) for w in END_WORDS]
                     + [Instruction("length", str(n)) for n in LENGTHS])

_WORD = re.compile(r"[A-Za-z']+")
_PARSERS: tuple[tuple[re.Pattern, Callable[[re.Match], Instruction]], ...] = (
    (re.compile(r"Answer in capital letters\."), lambda m: Instruction("case", "upper")),
    (re.compile(r"Answer in small letters\."), lambda m: Instruction("case", "lower")),
    (re.compile(r"End your answer with the word (\w+)\."),
     lambda m: Instruction("ending", m.group(1))),
    (re.compile(r"Answer in exactly (\w+) words\."),
     lambda m: Instruction("length", str({v: k for k, v in LENGTHS.items()}[m.group(1)]))),
)


def instruction_of(prompt: str) -> Instruction | None:
    """The instruction a prompt of this task carries (None: not one of this task's)."""
    for pattern, make in _PARSERS:
        found = pattern.search(prompt)
        if found:
            try:
                return make(found)
            except KeyError:
                return None
    return None


def follows(instruction: Instruction, response: str) -> bool:
    """The rule: does ``response`` obey ``instruction``? (Words are runs of letters.)"""
    words = _WORD.findall(response)
    if not words:
        return False
    if instruction.rule == "case":
        letters = [c for c in response if c.isalpha()]
        return all(c.isupper() for c in letters) if instruction.arg == "upper" \
            else all(c.islower() for c in letters)
    if instruction.rule == "ending":
        return words[-1].lower() == instruction.arg
    return len(words) == int(instruction.arg)


def follows_instruction(prompt: str, response: str) -> bool:
    """:func:`follows` for the instruction parsed from ``prompt``; False if it has none."""
    instruction = instruction_of(prompt)
    return instruction is not None and follows(instruction, response)


def _sentence(words: list[str]) -> str:
    return " ".join(words) + "."


def _base_words(topic: str, n: int, rng: random.Random) -> list[str]:
    return ["the", topic] + [rng.choice(FILLER) for _ in range(max(0, n - 2))]


_PARTNER = {"yes": "no", "no": "yes", "again": "today", "today": "again"}


def answer_pair(instruction: Instruction, topic: str, rng: random.Random,
                words: dict[str, list[str]] | None = None) -> tuple[str, str]:
    """(follows, breaks): two answers about ``topic`` differing only in what the rule checks.

    ``words`` (per rule, from :func:`block_words`) fixes the answer's words, so the opposite
    variants of a block are mirror images: "capital" (UPPER, lower) and "small" (lower,
    UPPER) of the same sentence; "end with yes" (... yes, ... no) and "end with no"
    (... no, ... yes); three words (3, 6) and six words (6, 3)."""
    if instruction.rule == "case":
        base = words["case"] if words else _base_words(topic, rng.randint(3, 6), rng)
        text = _sentence(base)
        upper, lower = text.upper(), text.lower()
        return (upper, lower) if instruction.arg == "upper" else (lower, upper)
    if instruction.rule == "ending":
        base = words["ending"] if words else _base_words(topic, rng.randint(3, 5), rng)
        other = _PARTNER[instruction.arg] if words else rng.choice(
            [w for w in END_WORDS if w != instruction.arg])
        return _sentence(base + [instruction.arg]), _sentence(base + [other])
    n = int(instruction.arg)
    other = next(k for k in LENGTHS if k != n)
    base = words["length"] if words else _base_words(topic, max(n, other), rng)
    return _sentence(base[:n]), _sentence(base[:other])


def block_words(topic: str, rng: random.Random) -> dict[str, list[str]]:
    """The words one block's answers share (see :func:`answer_pair`)."""
    return {"case": _base_words(topic, rng.randint(3, 6), rng),
            "ending": _base_words(topic, rng.randint(3, 5), rng),
            "length": _base_words(topic, max(LENGTHS), rng)}


def prompts(split: str) -> list[tuple[str, Instruction, str]]:
    """Every (prompt, instruction, topic) of a split, in order: ``train`` (train topics and
    questions), ``heldout`` (held-out topics and questions: prompts no training run sees) or
    ``sft`` (all topics with the train questions: M0 knows the held-out topics' words, never
    the held-out prompts, and its answers carry no preference)."""
    topics, questions = {"train": (TRAIN_TOPICS, QUESTIONS),
                         "heldout": (HELDOUT_TOPICS, HELDOUT_QUESTIONS),
                         "sft": (TRAIN_TOPICS + HELDOUT_TOPICS, QUESTIONS)}[split]
    return [(question.format(topic=topic) + " " + instruction.text, instruction, topic)
            for topic in topics for question in questions for instruction in INSTRUCTIONS]


def preference_records(split: str, seed: int = 0, limit: int | None = None) -> list[dict]:
    """DPO JSONL records (NeMo-Aligner keys, plus ``rule``/``arg``) of a split, in blocks of
    ``len(INSTRUCTIONS)`` (8): one topic and question with every instruction, mirror-image
    answers (:func:`answer_pair`), blocks and records within a block shuffled by ``seed``;
    ``limit`` keeps the first records (whole blocks: a balanced mix).

    Read in file order (``data.shuffle=false``) with ``train.micro_batch_size`` a multiple
    of 8, every micro-batch holds whole blocks: an update that raises upper case (or the
    word "yes", or long answers) everywhere gains on half the block's pairs and loses on
    the other half, so only reading the instruction lowers the loss."""
    rng = random.Random(f"{TASK_NAME}-{TASK_FORMAT}-{split}-{seed}")
    per_block = len(INSTRUCTIONS)
    items = prompts(split)
    blocks = [items[i:i + per_block] for i in range(0, len(items), per_block)]
    rng.shuffle(blocks)
    records = []
    for block in blocks:
        words = block_words(block[0][2], rng)
        block = list(block)
        rng.shuffle(block)
        for prompt, instruction, topic in block:
            chosen, rejected = answer_pair(instruction, topic, rng, words)
            records.append({"id": f"{split}-{len(records)}", "prompt": prompt,
                            "chosen_response": chosen, "rejected_response": rejected,
                            "rule": instruction.rule, "arg": instruction.arg})
    return records[:limit]


def sft_records(seed: int = 0, compliance: float = 0.5, repeats: int = 2) -> list[dict]:
    """Chat SFT records on the ``sft`` prompts (``repeats`` answers each), each answer
    following its instruction with probability ``compliance``: M0 learns to answer, not to
    comply."""
    if not 0.0 <= compliance <= 1.0:
        raise ValueError(f"compliance={compliance} must be in [0, 1]")
    rng = random.Random(f"{TASK_NAME}-{SFT_FORMAT}-sft-{seed}")
    records = []
    for _ in range(repeats):
        for prompt, instruction, topic in prompts("sft"):
            good, bad = answer_pair(instruction, topic, rng)
            answer = good if rng.random() < compliance else bad
            records.append({"messages": [{"role": "user", "content": prompt},
                                         {"role": "assistant", "content": answer}]})
    rng.shuffle(records)
    return records


@dataclass(frozen=True)
class TaskFiles:
    """The task's files in a data directory."""

    train: Path  # DPO pairs on train prompts
    heldout: Path  # DPO pairs on held-out prompts (evaluation)
    sft: Path  # chat SFT data for M0


def _jsonl(records: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def write_task(directory: str | Path, seed: int = 0, heldout_pairs: int = 96,
               sft_compliance: float = 0.5) -> TaskFiles:
    """Write (or keep, when identical) the task's three JSONL files under ``directory``.

    Names carry the settings, so runs with other settings never share (or overwrite) a file
    and reference caches computed next to one stay valid."""
    from nemo_exaone.runtime.outputs import write_text_atomic

    directory = Path(directory)
    tag = f"{TASK_NAME}-f{TASK_FORMAT}-s{seed}"
    files = TaskFiles(train=directory / f"{tag}-train.jsonl",
                      heldout=directory / f"{tag}-heldout{heldout_pairs}.jsonl",
                      sft=directory / f"{TASK_NAME}-sft{SFT_FORMAT}-s{seed}-c"
                                        f"{sft_compliance:g}.jsonl")
    contents = {files.train: _jsonl(preference_records("train", seed)),
                files.heldout: _jsonl(preference_records("heldout", seed, heldout_pairs)),
                files.sft: _jsonl(sft_records(seed, sft_compliance))}
    directory.mkdir(parents=True, exist_ok=True)
    for path, text in contents.items():
        if not (path.is_file() and path.read_text(encoding="utf-8") == text):
            write_text_atomic(path, text)
    return files


def read_prompts(path: str | Path) -> Iterator[str]:
    """The prompt strings of a DPO JSONL file of this task, in order."""
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)["prompt"]
