"""Global batches -> this rank's micro-batches, addressed by the number of consumed samples.

Step k of a run trains on global samples [k*G, (k+1)*G) (G = global batch size); within a
step, micro-batch m of data-parallel rank r holds samples ``m*M*D + r*M + [0, M)`` (M micro
batch size, D data-parallel size), as Megatron's pretraining sampler lays them out. The
global batch is therefore the same set of samples under any TP/PP/DP layout, and the data
position saved in a checkpoint is just ``consumed_samples``.
"""

from __future__ import annotations

import numpy as np
import torch

from nemo_exaone.training.samples import Sample, SampleSource

Batch = dict[str, torch.Tensor]


def collate(samples: list[Sample]) -> Batch:
    """Causal-LM micro-batch: inputs, next-token labels, loss mask (0 on padding), positions."""
    tokens = torch.from_numpy(np.stack([s.tokens for s in samples]))
    b, window = tokens.shape
    seq = window - 1
    valid = torch.tensor([s.valid for s in samples]).unsqueeze(1)
    # label j is tokens[j + 1]; it is real when j + 1 < valid
    loss_mask = (torch.arange(seq).unsqueeze(0) + 1 < valid).float()
    return {
        "tokens": tokens[:, :-1].contiguous(),
        "labels": tokens[:, 1:].contiguous(),
        "loss_mask": loss_mask,
        "position_ids": torch.arange(seq).unsqueeze(0).expand(b, -1).contiguous(),
    }


class GlobalBatches:
    """This data-parallel rank's micro-batches for the step that starts at a sample offset."""

    def __init__(self, source: SampleSource, global_batch_size: int, micro_batch_size: int,
                 dp_rank: int, dp_size: int) -> None:
        per_step = micro_batch_size * dp_size
        if global_batch_size % per_step:
            raise ValueError(
                f"train.global_batch_size={global_batch_size} is not divisible by "
                f"micro_batch_size x data_parallel_size = {micro_batch_size} x {dp_size}; "
                "change the batch sizes or the parallel layout")
        self.source = source
        self.global_batch_size = global_batch_size
        self.micro_batch_size = micro_batch_size
        self.dp_rank, self.dp_size = dp_rank, dp_size
        self.num_microbatches = global_batch_size // per_step

    def microbatches(self, consumed_samples: int) -> list[Batch]:
        mbs, out = self.micro_batch_size, []
        for m in range(self.num_microbatches):
            first = consumed_samples + m * mbs * self.dp_size + self.dp_rank * mbs
            out.append(collate([self.source.sample(first + i) for i in range(mbs)]))
        return out
