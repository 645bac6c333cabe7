"""One optimizer step over a global batch, with non-finite detection before the update.

Forward/backward runs through Megatron-Core's schedule for the current layout (no pipeline,
1F1B or interleaved). Before the optimizer touches the weights, the loss and every gradient
buffer are checked for NaN/Inf on all ranks together; a bad step applies no update (the
caller decides whether to skip or stop), so the model state stays the last good one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from nemo_exaone.training.batches import Batch
from nemo_exaone.training.optimizer import zero_grads


def comm_device() -> torch.device:
    """Where small tensors for collectives live: the current GPU under NCCL, else the CPU."""
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() \
        else torch.device("cpu")


@dataclass
class IterationResult:
    loss: float
    grad_norm: float
    num_tokens: int
    applied: bool  # False: non-finite loss/gradients, or the optimizer declined the update
    nonfinite: bool
    extra: dict[str, float] = field(default_factory=dict)  # other reported losses


def _reduce_reports(reports: list[dict], keys: list[str]) -> dict[str, tuple[float, float]]:
    """Sum [loss_sum, tokens] over micro-batches and data-parallel ranks; share over PP."""
    from megatron.core import parallel_state as ps

    values = torch.zeros(len(keys), 2, dtype=torch.float64, device=comm_device())
    for report in reports:
        for i, key in enumerate(keys):
            if key in report:
                values[i] += report[key].double()
    if reports and ps.get_data_parallel_world_size(with_context_parallel=True) > 1:
        torch.distributed.all_reduce(values, group=ps.get_data_parallel_group(
            with_context_parallel=True))
    if ps.get_pipeline_model_parallel_world_size() > 1:
        torch.distributed.broadcast(values, src=ps.get_pipeline_model_parallel_last_rank(),
                                    group=ps.get_pipeline_model_parallel_group())
    values = values.cpu()
    return {key: (float(values[i, 0]), float(values[i, 1])) for i, key in enumerate(keys)}


def _grads_finite(model_chunks: list) -> bool:
    """Whether this rank's gradient buffers hold only finite values.

    One sum per buffer: NaN/Inf anywhere makes the sum non-finite, and it reads the buffer
    once without allocating a mask (a finite sum overflowing fp32 would need gradients near
    1e38, which a healthy run never has).
    """
    return all(bool(torch.isfinite(buffer.grad_data.sum()))
               for chunk in model_chunks
               for buffer in list(getattr(chunk, "buffers", []))
               + list(getattr(chunk, "expert_parallel_buffers", [])))


def _all_ranks_true(flag: bool) -> bool:
    value = torch.tensor([1.0 if flag else 0.0], device=comm_device())
    if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MIN)
    return bool(value[0] > 0)


def run_iteration(
    model_chunks: list,
    optimizer,
    microbatches: list[Batch],
    micro_batch_size: int,
    seq_length: int,
    forward_step: Callable,
    loss_key: str,
    extra_keys: tuple[str, ...] = (),
) -> IterationResult:
    """Forward/backward over ``microbatches`` and, if everything is finite, one update."""
    from megatron.core.pipeline_parallel import get_forward_backward_func

    zero_grads(model_chunks, optimizer)
    iterators = [iter(microbatches) for _ in model_chunks]
    reports = get_forward_backward_func()(
        forward_step_func=forward_step,
        data_iterator=iterators if len(model_chunks) > 1 else iterators[0],
        model=model_chunks,
        num_microbatches=len(microbatches),
        seq_length=seq_length,
        micro_batch_size=micro_batch_size,
        forward_only=False,
    )
    keys = [loss_key, *[k for k in extra_keys if k != loss_key]]
    reduced = _reduce_reports(reports, keys)
    loss_sum, tokens = reduced[loss_key]
    loss = loss_sum / max(tokens, 1.0)
    extra = {k: s / max(n, 1.0) for k, (s, n) in reduced.items() if k != loss_key}
    finite = _all_ranks_true(bool(torch.isfinite(torch.tensor(loss)))
                             and _grads_finite(model_chunks))
    if not finite:
        return IterationResult(loss=loss, grad_norm=float("nan"), num_tokens=int(tokens),
                               applied=False, nonfinite=True, extra=extra)
    applied, grad_norm, _ = optimizer.step()
    if grad_norm is None and applied:  # clipping off: the optimizer did not compute it
        grad_norm = optimizer.get_grad_norm()
    grad_norm = float(grad_norm) if grad_norm is not None else float("nan")
    return IterationResult(loss=loss, grad_norm=grad_norm, num_tokens=int(tokens),
                           applied=bool(applied), nonfinite=not applied, extra=extra)
