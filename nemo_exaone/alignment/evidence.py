"""Held-out evaluation of a preference stage on the rule-checkable task (eval.json).

Two measurements per checkpoint, both on prompts the stage never trained on:

- **preference accuracy**: the share of held-out pairs whose chosen response gets the higher
  implicit reward. DPO family: ``beta * (log pi(y) - log pi_ref(y))`` (summed, or averaged
  with ``preference_average_log_probs``), against the stage's reference; SimPO:
  ``beta * mean log pi(y)`` (reference-free, length-normalised). A tie counts one half, so
  a DPO policy equal to its reference (every reward 0) scores exactly 0.5. Because that
  "before" figure is 0.5 by construction, every checkpoint also gets the reference-free
  ``logprob_accuracy`` (mean token log-prob of chosen above rejected): whether the model
  itself already prefers the instructed answer (the SFT model should not, ~0.5).
- **behaviour rate**: greedy generations (Megatron-Core's inference engine,
  :func:`nemo_exaone.inference.generation.generate`) on the held-out prompts, checked by the
  task's rule; also per rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from nemo_exaone.alignment.losses import PreferenceLossConfig


@dataclass
class CheckpointScores:
    """What one checkpoint does on the held-out set."""

    checkpoint: str
    sums: torch.Tensor  # [N, 2, 2]: pair x (chosen, rejected) x (log-prob sum, tokens)
    behaviour_rate: float | None  # None: not measured (no generation)
    behaviour_by_rule: dict[str, float] = field(default_factory=dict)
    examples: list[dict] = field(default_factory=list)  # a few generations, for the record

    def summary(self) -> dict:
        return {"checkpoint": self.checkpoint,
                "logprob_accuracy": logprob_accuracy(self.sums),
                "behaviour_rate": self.behaviour_rate,
                "behaviour_by_rule": self.behaviour_by_rule, "examples": self.examples}


def _wins(chosen: torch.Tensor, rejected: torch.Tensor) -> float:
    """Share of pairs with chosen > rejected, ties counting one half."""
    wins = (chosen > rejected).double() + 0.5 * (chosen == rejected).double()
    return float(wins.mean())


def logprob_accuracy(sums: torch.Tensor) -> float:
    """Mean token log-prob of chosen above rejected (reference-free)."""
    mean = sums[..., 0] / sums[..., 1].clamp(min=1)
    return _wins(mean[:, 0], mean[:, 1])


def implicit_rewards(cfg: PreferenceLossConfig, policy: torch.Tensor,
                     reference: torch.Tensor | None) -> torch.Tensor:
    """[N, 2] implicit rewards of (chosen, rejected) as the configured loss defines them."""
    if cfg.loss == "simpo":
        return cfg.beta * policy[..., 0] / policy[..., 1].clamp(min=1)
    if reference is None:
        raise ValueError(f"preference loss {cfg.loss!r} measures rewards against a reference")

    def reduce(sums: torch.Tensor) -> torch.Tensor:
        return sums[..., 0] / sums[..., 1].clamp(min=1) if cfg.average_log_probs \
            else sums[..., 0]

    return cfg.beta * (reduce(policy) - reduce(reference))


def preference_accuracy(cfg: PreferenceLossConfig, policy: torch.Tensor,
                        reference: torch.Tensor | None) -> float:
    """Share of held-out pairs whose chosen response has the higher implicit reward."""
    rewards = implicit_rewards(cfg, policy.double(),
                               None if reference is None else reference.double())
    return _wins(rewards[:, 0], rewards[:, 1])


def score_checkpoint(ckpt: str | Path, heldout: str | Path, tokenizer_dir: str,
                     seq_length: int, max_new_tokens: int, batch_size: int = 16,
                     examples: int = 6) -> CheckpointScores:
    """Log-prob sums of the held-out pairs and the rule-checked greedy behaviour of ``ckpt``.

    Builds the model in this process (its own process group, torn down afterwards): call it
    between training runs, not inside one."""
    from nemo_exaone.alignment.dpo import compute_reference_sums
    from nemo_exaone.alignment.preference_data import PreferenceSamples, read_preference_jsonl
    from nemo_exaone.alignment.synthetic_task import follows, instruction_of
    from nemo_exaone.data.chat_format import chat_format_for, encode_chat
    from nemo_exaone.data.tokenizer import load_tokenizer
    from nemo_exaone.inference.generation import GenerationConfig, default_stop_ids, generate
    from nemo_exaone.inference.loading import load_for_generation
    from nemo_exaone.runtime.distributed import destroy_distributed

    tokenizer = load_tokenizer(tokenizer_dir)
    records = read_preference_jsonl(heldout)
    try:
        loaded = load_for_generation(ckpt, tokenizer_dir=tokenizer_dir)
        chat_format = chat_format_for(loaded.arch.model_type)  # as the stage trained on it
        samples = PreferenceSamples(records, tokenizer, seq_length, shuffle=False,
                                    chat_format=chat_format)
        prompts = [encode_chat(tokenizer, r.messages, add_generation_prompt=True,
                               chat_format=chat_format).ids for r in records]
        sums = compute_reference_sums(loaded.chunks[0], samples, batch_size)
        if max_new_tokens <= 0:  # log-probs only
            return CheckpointScores(checkpoint=str(loaded.path), sums=sums,
                                    behaviour_rate=None)
        # Stop at the tokenizer's [|endofturn|] (the tiny tokenizer's id 361, EXAONE's eos
        # id, is an ordinary byte token).
        config = GenerationConfig(max_new_tokens=max_new_tokens,
                                  stop_ids=default_stop_ids(tokenizer))
        outputs = generate(loaded.chunks, prompts, config, tokenizer=tokenizer,
                           max_batch_size=batch_size * 2)
    finally:
        destroy_distributed()
    by_rule: dict[str, list[bool]] = {}
    shown = []
    for record, out in zip(records, outputs):
        prompt = record.messages[-1]["content"]
        instruction = instruction_of(prompt)
        ok = instruction is not None and follows(instruction, out.text or "")
        by_rule.setdefault(instruction.rule if instruction else "none", []).append(ok)
        if len(shown) < examples:
            shown.append({"prompt": prompt, "response": out.text, "follows": ok})
    flat = [ok for oks in by_rule.values() for ok in oks]
    return CheckpointScores(
        checkpoint=str(loaded.path), sums=sums, behaviour_rate=sum(flat) / len(flat),
        behaviour_by_rule={rule: sum(oks) / len(oks) for rule, oks in sorted(by_rule.items())},
        examples=shown)
