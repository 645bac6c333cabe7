"""Pretraining datasets through Megatron-Core: ``BlendedMegatronDatasetBuilder`` +
``GPTDatasetConfig`` / ``GPTDataset`` over the blend of :mod:`nemo_exaone.data.blends`.

Works in a single process with no ``torch.distributed`` process group and in any
initialized group (gloo on CPU, nccl on GPU): with a group, rank 0 builds and caches the
indices first and the other ranks load them after a barrier, so ``cache_dir`` must be on a
filesystem all ranks see. Megatron-Core 0.16.1's ``BlendedDataset`` calls
``torch.distributed.get_rank()`` on a cache miss even without a process group; in that case
(and only then) the build runs with ``get_rank`` answering 0, the single process's rank.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig
from megatron.core.tokenizers import MegatronTokenizerBase

from nemo_exaone.data.blends import BlendConfig, ResolvedBlend, resolve_blend
from nemo_exaone.data.megatron_helpers import ensure_dataset_helpers
from nemo_exaone.data.tokenizer import ExaoneTokenizer, load_tokenizer

__all__ = ["MegatronTokenizerAdapter", "PretrainingDatasets", "build_pretraining_datasets"]


class MegatronTokenizerAdapter(MegatronTokenizerBase):
    """The EXAONE tokenizer in the shape Megatron's datasets query (vocab size, eod, pad)."""

    def __init__(self, tokenizer: ExaoneTokenizer) -> None:
        super().__init__(tokenizer.path, {})
        self._tokenizer = tokenizer

    @property
    def unique_identifiers(self) -> dict:
        """What Megatron hashes into its index-cache names (with seed, split, ...)."""
        return {
            "class": f"{type(self).__module__}.{type(self).__qualname__}",
            "tokenizer_path": self.path,
            "vocab_size": self.vocab_size,
            "eod": self.eod,
        }

    def tokenize(self, text: str) -> list[int]:
        return self._tokenizer.encode(text)

    def detokenize(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids)

    @property
    def vocab(self) -> dict[str, int]:
        return self._tokenizer.backend.get_vocab(with_added_tokens=True)

    @property
    def vocab_size(self) -> int:
        return self._tokenizer.vocab_size

    def apply_chat_template(self, messages, add_generation_prompt: bool = False, **_):
        from nemo_exaone.data.chat_format import encode_chat

        return encode_chat(self._tokenizer, messages, add_generation_prompt).ids

    @property
    def eod(self) -> int:
        return self._tokenizer.eod_id

    @property
    def pad(self) -> int:
        pad = self._tokenizer.pad_id
        return -1 if pad is None else pad  # -1: Megatron's "no pad token" marker


@dataclass
class PretrainingDatasets:
    """Train/valid/test datasets (None for an empty split) and the blend they realize."""

    train: torch.utils.data.Dataset | None
    valid: torch.utils.data.Dataset | None
    test: torch.utils.data.Dataset | None
    blend: ResolvedBlend


@contextlib.contextmanager
def _rank_zero_without_process_group() -> Iterator[None]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        yield
        return
    original = torch.distributed.get_rank
    torch.distributed.get_rank = lambda group=None: 0
    try:
        yield
    finally:
        torch.distributed.get_rank = original


def build_pretraining_datasets(
    blend_config: BlendConfig,
    tokenizer: ExaoneTokenizer | str | Path,
    seq_length: int,
    seed: int,
    num_samples: int | Sequence[int],
    cache_dir: str | Path,
    is_built_on_rank: Callable[[], bool] | None = None,
    reset_position_ids: bool = False,
    reset_attention_mask: bool = False,
    eod_mask_loss: bool = False,
    create_attention_mask: bool = True,
    mid_level_dataset_surplus: float = 0.005,
) -> PretrainingDatasets:
    """Build Megatron GPT datasets for a (possibly replaying) blend.

    ``num_samples`` is the number of train samples, or ``(train, valid, test)``; each sample
    is ``seq_length + 1`` tokens cut across document boundaries (Megatron's packing). The
    order is fixed by ``seed`` and the blend: the training loop reads sample ``i`` at a
    given number of consumed samples (:class:`nemo_exaone.training.batches.GlobalBatches`).
    ``is_built_on_rank`` defaults to every rank (pass e.g. "tensor-parallel rank 0").
    """
    ensure_dataset_helpers()
    if isinstance(tokenizer, (str, Path)):
        tokenizer = load_tokenizer(tokenizer)
    sizes = [int(num_samples), 0, 0] if isinstance(num_samples, int) else list(num_samples)
    if len(sizes) != 3 or any(s < 0 for s in sizes):
        raise ValueError("num_samples must be an int or (train, valid, test) non-negative ints")
    if seq_length < 1:
        raise ValueError("seq_length must be positive")
    blend = resolve_blend(blend_config)
    prefixes, weights = blend.as_megatron_blend()
    megatron_weights = None if len(prefixes) == 1 else weights
    config = GPTDatasetConfig(
        random_seed=seed,
        sequence_length=seq_length,
        blend=(prefixes, megatron_weights),
        split=blend_config.split,
        path_to_cache=str(cache_dir),
        tokenizer=MegatronTokenizerAdapter(tokenizer),
        reset_position_ids=reset_position_ids,
        reset_attention_mask=reset_attention_mask,
        eod_mask_loss=eod_mask_loss,
        create_attention_mask=create_attention_mask,
        mid_level_dataset_surplus=mid_level_dataset_surplus,
    )
    builder = BlendedMegatronDatasetBuilder(
        GPTDataset, sizes, is_built_on_rank or (lambda: True), config
    )
    with _rank_zero_without_process_group():
        train, valid, test = builder.build()
    return PretrainingDatasets(train=train, valid=valid, test=test, blend=blend)
