"""Attention isolation for packed sequences: no token attends across a packed sample.

Packing several samples (SFT conversations, whole pretraining documents) into one sequence
keeps the accelerator busy, but a plain causal mask lets the second sample attend to the
first. Each packed token carries a segment id (``document_ids``: the index of the sample it
belongs to, ``-1`` on padding); from them:

* local spec (SDPA, :class:`nemo_exaone.model.attention.SDPACoreAttention`): a block-diagonal
  causal mask ``[b, 1, s, s]`` in Megatron's convention (True = may NOT attend), built by
  :func:`segment_attention_mask`. Padding is a segment of its own, so every query row keeps at
  least itself (no all-masked row, no NaN). EXAONE 4.0's sliding-window layers OR their band
  into it (:class:`nemo_exaone.model.exaone4.WindowedSDPACoreAttention`).
* Transformer Engine spec: the ``thd`` layout, a micro-batch flattened into one row with
  ``PackedSeqParams`` holding the cumulative sample lengths (``cu_seqlens``), which TE's fused
  attention and Megatron's per-sample RoPE read (:func:`thd_packed_seq_params`). Not exercised
  on a CPU host (no TE there); the construction is tested, the kernel path is not.

RoPE: Megatron's ``GPTModel`` rotates by absolute index within the row, ignoring
``position_ids``; attention scores under RoPE depend only on ``q - k``, so inside a block
the result equals that of the sample alone (the test compares them in fp32).
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["segment_attention_mask", "thd_packed_seq_params", "isolation_inputs"]

SEGMENT_KEY = "document_ids"


def segment_attention_mask(segment_ids: torch.Tensor) -> torch.Tensor:
    """``[b, s]`` segment ids -> ``[b, 1, s, s]`` bool mask, True where query ``q`` may NOT
    attend to key ``k``: a different segment, or a later position (causal)."""
    if segment_ids.dim() != 2:
        raise ValueError(f"segment ids must be [batch, seq], got shape {tuple(segment_ids.shape)}")
    s = segment_ids.shape[1]
    positions = torch.arange(s, device=segment_ids.device)
    future = positions.view(1, s) > positions.view(s, 1)  # [q, k]: k after q
    other = segment_ids.unsqueeze(2) != segment_ids.unsqueeze(1)  # [b, q, k]
    return (other | future.unsqueeze(0)).unsqueeze(1)


def _segment_lengths(segment_ids: torch.Tensor) -> torch.Tensor:
    """Lengths of the runs of equal ids along each row, rows concatenated (a new row always
    starts a new run)."""
    b, s = segment_ids.shape
    starts = torch.ones_like(segment_ids, dtype=torch.bool)
    starts[:, 1:] = segment_ids[:, 1:] != segment_ids[:, :-1]
    flat = starts.reshape(-1).nonzero().reshape(-1)
    ends = torch.cat([flat[1:], torch.tensor([b * s], device=flat.device)])
    return ends - flat


def thd_packed_seq_params(segment_ids: torch.Tensor):
    """``PackedSeqParams`` (``qkv_format="thd"``) for a micro-batch flattened to one row.

    Each run of equal segment ids (padding included, as its own sequence) is one sequence of
    the packed row; ``cu_seqlens`` are int32 offsets ``[0, l0, l0+l1, ...]`` as TE expects.
    """
    from megatron.core.packed_seq_params import PackedSeqParams

    lengths = _segment_lengths(segment_ids).to(torch.int32)
    cu = torch.zeros(len(lengths) + 1, dtype=torch.int32, device=segment_ids.device)
    cu[1:] = torch.cumsum(lengths, dim=0)
    longest = int(lengths.max())
    return PackedSeqParams(qkv_format="thd", cu_seqlens_q=cu, cu_seqlens_kv=cu,
                           cu_seqlens_q_padded=cu, cu_seqlens_kv_padded=cu,
                           max_seqlen_q=longest, max_seqlen_kv=longest)


def isolation_inputs(batch: dict[str, torch.Tensor], spec: str
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, dict[str, Any]]:
    """``(tokens, position_ids, labels, model kwargs)`` for one micro-batch.

    Without segment ids: the batch as it is, plain causal attention. With them: on the local
    spec an ``attention_mask``; on the TE spec the ``thd`` layout (tokens, positions and
    labels flattened to ``[1, b*s]``, which the per-token loss mask follows by reshape).
    """
    tokens, positions, labels = batch["tokens"], batch["position_ids"], batch.get("labels")
    segments = batch.get(SEGMENT_KEY)
    if segments is None:
        return tokens, positions, labels, {"attention_mask": None}
    if spec == "te":
        def flat(t):
            return None if t is None else t.reshape(1, -1)

        return (flat(tokens), flat(positions), flat(labels),
                {"attention_mask": None, "packed_seq_params": thd_packed_seq_params(segments)})
    return tokens, positions, labels, {"attention_mask": segment_attention_mask(segments)}
