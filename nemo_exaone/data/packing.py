"""Packing whole samples (SFT conversations) into fixed-length training sequences.

Each packed sequence holds ``seq_length + 1`` token slots (inputs plus the last label) filled
by whole samples in a seeded order (next-fit: a sample that does not fit closes the current
pack), the rest padding. A pack carries, per position, the fields the loop's causal-LM
collate reads plus ``document_ids`` (which sample the token belongs to, -1 on padding):
positions restart at 0 in every sample, no label crosses a sample boundary, and the
objective turns ``document_ids`` into attention that never crosses one either
(:mod:`nemo_exaone.model.packed_attention`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["next_fit", "pack_sample"]


def next_fit(lengths: Sequence[int], order: Sequence[int], capacity: int) -> list[list[int]]:
    """Group sample indices (taken in ``order``) into packs of at most ``capacity`` tokens.

    Every length must be <= ``capacity`` (the caller skips or truncates longer samples).
    """
    packs: list[list[int]] = []
    current: list[int] = []
    used = 0
    for index in order:
        length = int(lengths[index])
        if length > capacity:
            raise ValueError(f"sample {index} has {length} tokens > capacity {capacity}")
        if current and used + length > capacity:
            packs.append(current)
            current, used = [], 0
        current.append(int(index))
        used += length
    if current:
        packs.append(current)
    return packs


def pack_sample(pieces: Sequence[tuple[Sequence[int], Sequence[int]]], seq_length: int,
                pad_id: int = 0, segment_ids: Sequence[int] | None = None
                ) -> dict[str, torch.Tensor]:
    """One training sample from whole ``(token ids, 0/1 loss mask over those tokens)`` pieces.

    ``loss_mask[i]`` is 1 when label ``i`` (token ``i + 1``) is a trained token of the same
    piece as token ``i``. ``segment_ids`` names each piece in ``document_ids`` (default: its
    index in ``pieces``).
    """
    capacity = seq_length + 1
    buffer = np.full(capacity, pad_id, dtype=np.int64)
    trained = np.zeros(capacity, dtype=np.float32)
    segments = np.full(capacity, -1, dtype=np.int64)
    positions = np.zeros(capacity, dtype=np.int64)
    used = 0
    for number, (ids, mask) in enumerate(pieces):
        if len(ids) != len(mask):
            raise ValueError(f"piece {number}: {len(ids)} tokens but {len(mask)} mask values")
        end = used + len(ids)
        if end > capacity:
            raise ValueError(f"pieces hold {end} tokens > seq_length + 1 = {capacity}")
        buffer[used:end] = ids
        trained[used:end] = mask
        segments[used:end] = number if segment_ids is None else segment_ids[number]
        positions[used:end] = np.arange(len(ids))
        used = end
    same = (segments[1:] == segments[:-1]) & (segments[1:] >= 0)
    return {
        "tokens": torch.from_numpy(buffer[:-1].copy()),
        "labels": torch.from_numpy(buffer[1:].copy()),
        "loss_mask": torch.from_numpy(trained[1:] * same),
        "position_ids": torch.from_numpy(positions[:-1].copy()),
        "document_ids": torch.from_numpy(segments[:-1].copy()),
    }
