"""Deterministic, resumable sample order for data-parallel training.

Megatron's datasets are already shuffled (seeded) index spaces: sample ``i`` is the same
tokens on every run with the same seed and blend. The order of training is then simply
``0, 1, 2, ...`` in that space, cut into global micro-batches of
``micro_batch_size * data_parallel_size`` samples, each data-parallel rank taking its slice.
Resuming after ``consumed_samples`` samples starts the same cut at that sample, so the
batches after a restart are identical to those an uninterrupted run would have produced.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

__all__ = ["ResumableBatchSampler", "build_data_loader"]


class ResumableBatchSampler:
    """Yields this rank's micro-batch indices, starting at ``consumed_samples``.

    ``consumed_samples`` counts samples consumed by *all* ranks together (Megatron's
    convention), so it is the same number on every rank and in the checkpoint.
    """

    def __init__(
        self,
        total_samples: int,
        consumed_samples: int,
        micro_batch_size: int,
        data_parallel_rank: int = 0,
        data_parallel_size: int = 1,
        drop_last: bool = True,
    ) -> None:
        if total_samples <= 0:
            raise ValueError(f"no samples to draw (total_samples={total_samples})")
        if micro_batch_size <= 0 or data_parallel_size <= 0:
            raise ValueError("micro_batch_size and data_parallel_size must be positive")
        if not 0 <= data_parallel_rank < data_parallel_size:
            raise ValueError(f"data_parallel_rank {data_parallel_rank} not in [0, {data_parallel_size})")
        if not 0 <= consumed_samples <= total_samples:
            raise ValueError(f"consumed_samples {consumed_samples} not in [0, {total_samples}]")
        self.total_samples = total_samples
        self.consumed_samples = consumed_samples
        self.micro_batch_size = micro_batch_size
        self.data_parallel_rank = data_parallel_rank
        self.data_parallel_size = data_parallel_size
        self.drop_last = drop_last

    @property
    def global_micro_batch(self) -> int:
        return self.micro_batch_size * self.data_parallel_size

    def __len__(self) -> int:
        remaining = self.total_samples - self.consumed_samples
        full, rest = divmod(remaining, self.global_micro_batch)
        return full + (1 if rest > self.data_parallel_rank * self.micro_batch_size
                       and not self.drop_last else 0)

    def __iter__(self) -> Iterator[list[int]]:
        step = self.global_micro_batch
        for start in range(self.consumed_samples, self.total_samples, step):
            end = min(start + step, self.total_samples)
            if end - start < step and self.drop_last:
                return
            mine_start = start + self.data_parallel_rank * self.micro_batch_size
            mine = list(range(mine_start, min(mine_start + self.micro_batch_size, end)))
            if mine:
                yield mine


def build_data_loader(
    dataset: torch.utils.data.Dataset,
    consumed_samples: int,
    micro_batch_size: int,
    data_parallel_rank: int = 0,
    data_parallel_size: int = 1,
    num_workers: int = 0,
    drop_last: bool = True,
) -> torch.utils.data.DataLoader:
    """A DataLoader over ``dataset`` in the resumable order of :class:`ResumableBatchSampler`."""
    sampler = ResumableBatchSampler(
        total_samples=len(dataset),
        consumed_samples=consumed_samples,
        micro_batch_size=micro_batch_size,
        data_parallel_rank=data_parallel_rank,
        data_parallel_size=data_parallel_size,
        drop_last=drop_last,
    )
    return torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, num_workers=num_workers, pin_memory=False,
        persistent_workers=num_workers > 0,
    )
