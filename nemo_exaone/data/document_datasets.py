"""Datasets that never cut a document: long-context pretraining and chat SFT.

EXAONE's second pretraining stage reads documents whole (no chunking) to teach long
context, and SFT must keep each conversation intact. :class:`WholeDocumentDataset` reads the
documents of an indexed dataset (``document_indices`` mark their boundaries), packs whole
documents into sequences of ``seq_length + 1`` tokens (next-fit in a seeded shuffled order),
and returns, per sample::

    tokens, labels      (seq_length,) int64     labels[i] = token i+1 of the same buffer
    loss_mask           (seq_length,) float32   1 where the label belongs to the same
                                                 document as the token (and, for SFT, is an
                                                 assistant token); 0 on padding
    position_ids        (seq_length,) int64     restart at 0 in every document
    document_ids        (seq_length,) int64     index of the packed document, -1 on padding

so no loss target crosses a document boundary, and the loop's objective turns
``document_ids`` into a block-diagonal causal mask (local spec) or THD packed-sequence
boundaries (TE spec), so no attention crosses one either
(:mod:`nemo_exaone.model.packed_attention`). Documents longer than
``seq_length + 1`` are skipped (``too_long="skip"``, counted in ``num_skipped``), truncated
(``"truncate"``, the usual SFT choice) or rejected (``"error"``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from nemo_exaone.data.preprocess import mask_prefix

__all__ = ["WholeDocumentDataset", "build_long_context_dataset", "build_sft_dataset"]

_TOO_LONG = ("skip", "truncate", "error")


class WholeDocumentDataset(torch.utils.data.Dataset):
    """Whole documents of a Megatron indexed dataset, packed without splitting any."""

    def __init__(
        self,
        prefix: str | Path,
        seq_length: int,
        seed: int = 1234,
        shuffle: bool = True,
        pack: bool = True,
        too_long: str = "skip",
        pad_id: int = 0,
        loss_mask_prefix: str | Path | None = None,
    ) -> None:
        from megatron.core.datasets.indexed_dataset import IndexedDataset

        if too_long not in _TOO_LONG:
            raise ValueError(f"too_long must be one of {_TOO_LONG}, got {too_long!r}")
        if seq_length < 1:
            raise ValueError("seq_length must be positive")
        self.seq_length = seq_length
        self.pad_id = pad_id
        self.tokens = IndexedDataset(str(prefix))
        self.masks = IndexedDataset(str(loss_mask_prefix)) if loss_mask_prefix else None
        if self.masks is not None and not np.array_equal(
            self.masks.sequence_lengths, self.tokens.sequence_lengths
        ):
            raise ValueError(f"{loss_mask_prefix} does not match {prefix} sequence for sequence")
        doc_index = np.asarray(self.tokens.document_indices, dtype=np.int64)
        self._doc_first_seq = doc_index[:-1]
        self._doc_end_seq = doc_index[1:]
        seq_lengths = np.asarray(self.tokens.sequence_lengths, dtype=np.int64)
        seq_cumsum = np.concatenate([[0], np.cumsum(seq_lengths)])
        doc_lengths = seq_cumsum[self._doc_end_seq] - seq_cumsum[self._doc_first_seq]
        capacity = seq_length + 1
        order = np.arange(len(doc_lengths))
        if shuffle:
            order = np.random.default_rng(seed).permutation(len(doc_lengths))
        too_long_docs = order[doc_lengths[order] > capacity]
        if len(too_long_docs) and too_long == "error":
            from nemo_exaone.config.errors import InputError

            raise InputError(
                f"{prefix}: document {int(too_long_docs[0])} has "
                f"{int(doc_lengths[too_long_docs[0]])} tokens > seq_length + 1 = {capacity}; "
                "raise train.seq_length or set data.too_long_documents=skip or truncate"
            )
        if too_long == "skip":
            order = order[doc_lengths[order] <= capacity]
        self.num_skipped = int(len(too_long_docs)) if too_long == "skip" else 0
        self.num_truncated = int(len(too_long_docs)) if too_long == "truncate" else 0
        self._doc_lengths = np.minimum(doc_lengths, capacity)
        self._samples = self._pack(order, capacity) if pack else [[int(d)] for d in order]
        self.num_documents = int(len(order))

    def _pack(self, order: np.ndarray, capacity: int) -> list[list[int]]:
        samples: list[list[int]] = []
        current: list[int] = []
        used = 0
        for doc in order.tolist():
            length = int(self._doc_lengths[doc])
            if current and used + length > capacity:
                samples.append(current)
                current, used = [], 0
            current.append(doc)
            used += length
        if current:
            samples.append(current)
        return samples

    @property
    def fill_ratio(self) -> float:
        """Fraction of sample token slots holding document tokens (the rest is padding)."""
        used = sum(int(self._doc_lengths[d]) for s in self._samples for d in s)
        return used / max(1, len(self._samples) * (self.seq_length + 1))

    def __len__(self) -> int:
        return len(self._samples)

    def document(self, doc: int, with_mask: bool = False):
        """Token ids of whole document ``doc`` (all its sequences), and its mask if asked."""
        seqs = range(int(self._doc_first_seq[doc]), int(self._doc_end_seq[doc]))
        tokens = np.concatenate([self.tokens[s] for s in seqs]).astype(np.int64)
        if not with_mask:
            return tokens
        if self.masks is None:
            return tokens, np.ones(len(tokens), dtype=np.float32)
        return tokens, np.concatenate([self.masks[s] for s in seqs]).astype(np.float32)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        capacity = self.seq_length + 1
        buffer = np.full(capacity, self.pad_id, dtype=np.int64)
        targets = np.zeros(capacity, dtype=np.float32)
        doc_ids = np.full(capacity, -1, dtype=np.int64)
        positions = np.zeros(capacity, dtype=np.int64)
        used = 0
        for doc in self._samples[index]:
            tokens, mask = self.document(doc, with_mask=True)
            tokens, mask = tokens[:capacity - used], mask[:capacity - used]
            end = used + len(tokens)
            buffer[used:end] = tokens
            targets[used:end] = mask
            doc_ids[used:end] = doc
            positions[used:end] = np.arange(len(tokens))
            used = end
        same_document = (doc_ids[1:] == doc_ids[:-1]) & (doc_ids[1:] >= 0)
        return {
            "tokens": torch.from_numpy(buffer[:-1].copy()),
            "labels": torch.from_numpy(buffer[1:].copy()),
            "loss_mask": torch.from_numpy(targets[1:] * same_document),
            "position_ids": torch.from_numpy(positions[:-1].copy()),
            "document_ids": torch.from_numpy(doc_ids[:-1].copy()),
        }


def build_long_context_dataset(
    prefix: str | Path, seq_length: int, seed: int = 1234, pack: bool = True,
    too_long: str = "skip", pad_id: int = 0,
) -> WholeDocumentDataset:
    """Whole-document pretraining samples for the long-context stage (loss on every token)."""
    return WholeDocumentDataset(prefix, seq_length, seed=seed, pack=pack, too_long=too_long,
                                pad_id=pad_id)


def build_sft_dataset(
    prefix: str | Path, seq_length: int, seed: int = 1234, pack: bool = True,
    too_long: str = "truncate", pad_id: int = 0,
) -> WholeDocumentDataset:
    """Chat SFT samples: loss only on assistant tokens (``PREFIX_assistant_mask``)."""
    masks = mask_prefix(prefix)
    if not Path(f"{masks}.idx").is_file():
        raise FileNotFoundError(f"{masks}.idx: not a chat dataset (preprocess with mode 'chat')")
    return WholeDocumentDataset(prefix, seq_length, seed=seed, pack=pack, too_long=too_long,
                                pad_id=pad_id, loss_mask_prefix=masks)
