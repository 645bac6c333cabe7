"""One optimizer step through Megatron-Core's pipeline schedules.

The schedule is chosen by Megatron from the parallel state (no pipelining, 1F1B, or
interleaved 1F1B with virtual stages). The batch format and loss are pluggable: later
stages (SFT, reward model, DPO) pass their own ``forward_step``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial

import torch

from nemo_exaone.training.losses import lm_loss
from nemo_exaone.training.optimizer import zero_grads

Batch = dict[str, torch.Tensor]


def lm_forward_step(data_iterator: Iterator[Batch], model):
    """Forward one micro-batch of a causal LM batch: tokens, labels, loss_mask, position_ids."""
    # On CPU the compat layer makes .cuda() a no-op, so this one line serves both machines.
    batch = {k: v.cuda(non_blocking=True) for k, v in next(data_iterator).items()}
    output = model(batch["tokens"], batch["position_ids"], None, labels=batch["labels"])
    return output, partial(lm_loss, batch["loss_mask"])


def _reduce_loss(losses: list[dict], key: str) -> float:
    """Average micro-batch losses on the last stage, average over data-parallel replicas,
    then share the value with every rank (so all ranks log the same number)."""
    from megatron.core import parallel_state

    value = torch.zeros(1, dtype=torch.float64)
    if losses:
        value[0] = torch.stack([d[key].double() for d in losses]).mean()
        if parallel_state.get_data_parallel_world_size() > 1:
            torch.distributed.all_reduce(value, group=parallel_state.get_data_parallel_group())
            value /= parallel_state.get_data_parallel_world_size()
    if parallel_state.get_pipeline_model_parallel_world_size() > 1:
        torch.distributed.broadcast(
            value, src=parallel_state.get_pipeline_model_parallel_last_rank(),
            group=parallel_state.get_pipeline_model_parallel_group())
    return float(value[0])


def train_step(
    model_chunks: list,
    optimizer,
    microbatches: list[Batch],
    micro_batch_size: int,
    seq_length: int,
    forward_step: Callable = lm_forward_step,
    loss_key: str = "lm loss",
) -> dict[str, float]:
    """Run forward/backward over ``microbatches`` and one optimizer update.

    Returns loss (mean over micro-batches, same value on every rank), grad_norm and whether
    the update was applied (False when the grad norm was not finite).
    """
    from megatron.core.pipeline_parallel import get_forward_backward_func

    zero_grads(model_chunks, optimizer)
    iterators = [iter(microbatches) for _ in model_chunks]
    losses = get_forward_backward_func()(
        forward_step_func=forward_step,
        data_iterator=iterators if len(model_chunks) > 1 else iterators[0],
        model=model_chunks,
        num_microbatches=len(microbatches),
        seq_length=seq_length,
        micro_batch_size=micro_batch_size,
        forward_only=False,
    )
    update_successful, grad_norm, _ = optimizer.step()
    return {
        "loss": _reduce_loss(losses, loss_key),
        "grad_norm": float(grad_norm) if grad_norm is not None else float("nan"),
        "update_successful": bool(update_successful),
    }
