"""Global batches -> this rank's micro-batches, addressed by the number of consumed samples.

Step k of a run trains on global samples [k*G, (k+1)*G) (G = global batch size); within a
step, micro-batch m of data-parallel rank r holds samples ``m*M*D + r*M + [0, M)`` (M micro
batch size, D data-parallel size), the layout of Megatron's pretraining sampler. The global
batch is therefore the same set of samples under any TP/PP/DP layout, and the data position
saved in a checkpoint is just ``consumed_samples``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from nemo_exaone.training.samples import Sample, SampleSource

Batch = dict[str, torch.Tensor]
BATCH_KEYS = ("tokens", "labels", "loss_mask", "position_ids")


def collate(samples: list[Sample]) -> Batch:
    """Stack the causal-LM fields of ``samples``, and ``document_ids`` when every sample is a
    pack of several (the objective then keeps them from attending to each other); other
    fields are dropped."""
    keys = BATCH_KEYS + (("document_ids",) if all("document_ids" in s for s in samples) else ())
    batch = {key: torch.stack([torch.as_tensor(s[key]) for s in samples]) for key in keys}
    if "document_ids" in batch:
        batch["document_ids"] = batch["document_ids"].long()
    batch["tokens"] = batch["tokens"].long()
    batch["labels"] = batch["labels"].long()
    batch["position_ids"] = batch["position_ids"].long()
    batch["loss_mask"] = batch["loss_mask"].float()
    return batch


class GlobalBatches:
    """This data-parallel rank's micro-batches for the step that starts at a sample offset.

    ``collate_fn`` turns a micro-batch's samples into the tensors its objective reads (the
    causal-LM fields by default; a preference objective would stack chosen/rejected pairs).
    """

    def __init__(self, source: SampleSource, global_batch_size: int, micro_batch_size: int,
                 dp_rank: int, dp_size: int,
                 collate_fn: Callable[[list[Sample]], Batch] | None = None) -> None:
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
        self.collate_fn = collate_fn or collate

    def microbatches(self, consumed_samples: int) -> list[Batch]:
        mbs, out = self.micro_batch_size, []
        for m in range(self.num_microbatches):
            first = consumed_samples + m * mbs * self.dp_size + self.dp_rank * mbs
            out.append(self.collate_fn([self.source[first + i] for i in range(mbs)]))
        return out
