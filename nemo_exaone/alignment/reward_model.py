"""Reward model: the EXAONE backbone (Megatron-Core GPTModel) with a scalar head.

The head is a bias-free ``hidden -> 1`` linear layer, registered as ``reward_head`` on the
GPTModel and applied where the LM head would be: the output layer's ``forward`` is redirected
to it, so ``model(tokens, position_ids, None)`` returns per-position scores [B, S, 1] through
Megatron's own forward (embedding, RoPE, decoder, final norm), and every other piece of the
stack (DDP, optimizers, schedules, distributed checkpoints at any TP) sees an ordinary
module. The LM head's weights stay in the model, frozen and unused: a reward-model
checkpoint is an LM checkpoint plus ``reward_head.weight``, so it starts from any SFT/
pretraining checkpoint and back. The head is replicated on every tensor-parallel rank (its
input, the final hidden state, is identical there; under sequence parallelism it is first
gathered along the sequence).

A sequence's reward is the score at its last real (non-pad) token; padding is on the right,
so causal attention keeps pads from changing it. Training: Bradley-Terry loss on
chosen/rejected pairs (:func:`~nemo_exaone.alignment.losses.bradley_terry_loss`) as an
objective of the one training loop. Scoring: :func:`score` on model chunks held by any run
(a preference-data builder, online RL), or the ``nemo-exaone align score`` command.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path

import torch

from nemo_exaone.alignment.losses import bradley_terry_loss
from nemo_exaone.alignment.preference_data import collate_pairs, encode_conversation

HEAD_NAME = "reward_head"
HEAD_KEY = f"{HEAD_NAME}.weight"
HEAD_SEED = 20240601  # the head's initialisation is the same on every rank and every run


def _unwrap(model):
    while hasattr(model, "module"):
        model = model.module
    return model


def has_reward_head(model) -> bool:
    return hasattr(_unwrap(model), HEAD_NAME)


def attach_reward_head(model, std: float | None = None) -> None:
    """Give a GPTModel chunk (before DDP wrapping) its scalar head, in place.

    Initialised N(0, std) (default: the model's ``init_method_std``) from a fixed seed, so
    every tensor-parallel rank holds the same head. The LM output layer is frozen.
    """
    from megatron.core import parallel_state

    model = _unwrap(model)
    if has_reward_head(model):
        return
    if not parallel_state.is_pipeline_last_stage(ignore_virtual=True):
        raise ValueError("the reward model runs with pipeline_model_parallel_size=1 "
                         "(TP and DP work)")
    config = model.config
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() \
        else torch.device("cpu")
    head = torch.nn.Linear(config.hidden_size, 1, bias=False, dtype=config.params_dtype,
                           device=device)
    generator = torch.Generator().manual_seed(HEAD_SEED)
    init = torch.randn(1, config.hidden_size, generator=generator)
    with torch.no_grad():
        head.weight.copy_(init * (std if std is not None else config.init_method_std))
    model.add_module(HEAD_NAME, head)
    for param in model.output_layer.parameters():
        param.requires_grad_(False)
    model.output_layer.forward = partial(_score_positions, model)


def _score_positions(model, hidden_states: torch.Tensor, weight=None,
                     runtime_gather_output=None) -> tuple[torch.Tensor, None]:
    """Stands in for the output layer: hidden [S(/tp), B, H] -> scores [S, B, 1]."""
    del weight, runtime_gather_output  # the LM head's arguments
    if model.config.sequence_parallel:
        from megatron.core.tensor_parallel import gather_from_sequence_parallel_region

        # Every TP rank then computes the same scores; the backward splits (no reduction).
        hidden_states = gather_from_sequence_parallel_region(
            hidden_states, tensor_parallel_output_grad=False)
    head = getattr(model, HEAD_NAME)
    return head(hidden_states.to(head.weight.dtype)), None


def last_token_scores(scores: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Per-sequence reward: ``scores`` [B, S, 1] at position ``lengths - 1`` -> [B] (fp32)."""
    if bool((lengths < 1).any()) or bool((lengths > scores.shape[1]).any()):
        raise ValueError(f"sequence lengths {lengths.tolist()} outside 1..{scores.shape[1]}")
    index = (lengths.long() - 1).to(scores.device)
    return scores.squeeze(-1).gather(1, index.unsqueeze(1)).squeeze(1).float()


class RewardModelObjective:
    """Bradley-Terry training of a reward model on chosen/rejected pairs.

    A micro-batch of B pairs runs as 2B sequences (chosen, then rejected); the loss sum is
    over pairs and the count is the number of pairs, so the loop's per-token mode averages
    over the pairs of the whole global batch.
    """

    loss_key = "reward loss"
    extra_keys = ("reward accuracy", "reward margin")

    def __init__(self) -> None:
        self.inject_nonfinite = False

    @staticmethod
    def collate(samples: list[dict]) -> dict[str, torch.Tensor]:
        return collate_pairs(samples)

    def forward_step(self, data_iterator: Iterator[dict], model):
        from nemo_exaone.training.objectives import to_device

        batch = to_device(next(data_iterator))
        output = model(batch["tokens"], batch["position_ids"], None)
        return output, partial(self._loss, batch["lengths"])

    def _loss(self, lengths: torch.Tensor, output: torch.Tensor):
        rewards = last_token_scores(output, lengths)
        pairs = rewards.shape[0] // 2
        chosen, rejected = rewards[:pairs], rewards[pairs:]
        losses, accuracy = bradley_terry_loss(chosen, rejected)
        total = losses.sum()
        if self.inject_nonfinite:
            total = total * float("nan")
        count = torch.tensor(pairs, dtype=torch.int, device=total.device)
        n = count.float()
        report = {self.loss_key: torch.stack([total.detach(), n]),
                  "reward accuracy": torch.stack([accuracy.sum(), n]),
                  "reward margin": torch.stack([(chosen - rejected).detach().sum(), n])}
        return total, count, report


# ------------------------------------------------------------------ loading
def checkpoint_has_reward_head(ckpt_dir: str | os.PathLike) -> bool:
    from nemo_exaone.checkpoint.mcore_checkpoint import stored_keys

    return HEAD_KEY in stored_keys(ckpt_dir)


def init_reward_chunks(chunks: list, init_path: str | os.PathLike | None, arch,
                       load_weights: bool) -> list[str]:
    """Attach the head to fresh chunks and, with ``load_weights``, load ``init_path``.

    An LM checkpoint (no head) loads into the backbone and the head starts fresh; a reward
    checkpoint loads whole. Returns the architecture changes (as ``load_stage_weights``).
    """
    from nemo_exaone.checkpoint.mcore_checkpoint import load_stage_weights

    changes: list[str] = []
    if init_path is not None and load_weights and not checkpoint_has_reward_head(init_path):
        changes = load_stage_weights(chunks, init_path, arch)
        init_path = None
    for chunk in chunks:
        attach_reward_head(chunk)
    if init_path is not None and load_weights:
        changes = load_stage_weights(chunks, init_path, arch)
    return changes


def load_reward_model(ckpt: str | os.PathLike, *, tensor_parallel: int = 1,
                      precision: str = "fp32", seed: int = 0):
    """(chunks, arch, checkpoint path) of a trained reward model, process groups set up
    (a plain process or every rank of ``torchrun``). A checkpoint without a reward head is
    refused, naming it."""
    from nemo_exaone.checkpoint.errors import CheckpointError
    from nemo_exaone.checkpoint.locate import locate_checkpoint
    from nemo_exaone.checkpoint.mcore_checkpoint import load_mcore_checkpoint
    from nemo_exaone.checkpoint.metadata import read_checkpoint_arch
    from nemo_exaone.config.parallel import ParallelConfig, PrecisionConfig
    from nemo_exaone.model.builder import build_model_chunks
    from nemo_exaone.runtime.distributed import init_distributed

    path = locate_checkpoint(ckpt).path
    if not checkpoint_has_reward_head(path):
        raise CheckpointError(f"{path} has no {HEAD_KEY}: it is not a reward model "
                              "(train one with examples/reward_model.py)")
    arch = read_checkpoint_arch(path)
    parallel = ParallelConfig(tensor_model_parallel_size=tensor_parallel)
    if not torch.distributed.is_initialized():
        init_distributed(parallel, seed=seed)
    chunks = build_model_chunks(arch, parallel, PrecisionConfig(dtype=precision))
    for chunk in chunks:
        attach_reward_head(chunk)
    load_mcore_checkpoint(chunks, path, arch)
    return chunks, arch, Path(path)


def checkpoint_tokenizer(ckpt_dir: str | os.PathLike, explicit: str | os.PathLike | None = None):
    """The tokenizer a checkpoint carries (its HF identity), or ``explicit``."""
    from nemo_exaone.checkpoint.exaone_hf import tokenizer_files
    from nemo_exaone.checkpoint.identity import recorded_identity
    from nemo_exaone.data.tokenizer import load_tokenizer

    if explicit is not None:
        return load_tokenizer(explicit)
    identity = recorded_identity(ckpt_dir)
    if identity is None or not tokenizer_files(list(identity.files)):
        raise FileNotFoundError(f"{ckpt_dir} carries no tokenizer; pass --tokenizer DIR")
    return load_tokenizer(identity.directory)


# ------------------------------------------------------------------ scoring
def _prompt_messages(prompt) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


@torch.no_grad()
def score_token_batches(model_chunks: list, sequences: Sequence[Sequence[int]],
                        batch_size: int = 8, pad_id: int = 0) -> list[float]:
    """Rewards of token sequences, ``batch_size`` at a time (right-padded to the longest of
    each batch). Every tensor-parallel rank must call it with the same sequences."""
    if len(model_chunks) != 1:
        raise ValueError("scoring runs on one model chunk (no virtual pipeline stages)")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    model = model_chunks[0]
    if not has_reward_head(model):
        raise ValueError("the model has no reward head (attach_reward_head / "
                         "load_reward_model)")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out: list[float] = []
    try:
        for start in range(0, len(sequences), batch_size):
            chunk = [list(s) for s in sequences[start:start + batch_size]]
            if any(not s for s in chunk):
                raise ValueError(f"sequence {start + [bool(s) for s in chunk].index(False)} "
                                 "is empty")
            width = max(len(s) for s in chunk)
            tokens = torch.tensor([s + [pad_id] * (width - len(s)) for s in chunk],
                                  dtype=torch.long, device=device)
            positions = torch.arange(width, device=device).unsqueeze(0).expand_as(tokens)
            lengths = torch.tensor([len(s) for s in chunk], device=device)
            scores = model(tokens, positions.contiguous(), None)
            out.extend(last_token_scores(scores, lengths).tolist())
    finally:
        model.train(was_training)
    return out


def score(model_chunks: list, tokenizer, pairs: Sequence[tuple], batch_size: int = 8,
          max_length: int | None = None, *, chat_format: str) -> list[float]:
    """Rewards of ``(prompt, response)`` pairs (prompt: a string or a message list),
    ``batch_size`` sequences per forward. ``chat_format`` is the reward model's family
    (``chat_format_for(arch.model_type)``): the one it was trained on, so it has no default
    that would silently render a 4.0 model's input as 3.x. A sequence longer than
    ``max_length`` is refused, naming its index."""
    sequences = []
    for i, (prompt, response) in enumerate(pairs):
        ids = encode_conversation(tokenizer, _prompt_messages(prompt), response,
                                  chat_format).ids
        if max_length is not None and len(ids) > max_length:
            raise ValueError(f"pair {i}: {len(ids)} tokens, longer than max_length="
                             f"{max_length}")
        sequences.append(ids)
    pad = tokenizer.pad_id if tokenizer.pad_id is not None else 0
    values = score_token_batches(model_chunks, sequences, batch_size, pad)
    if not all(math.isfinite(v) for v in values):
        raise FloatingPointError("the reward model produced non-finite scores")
    return values
