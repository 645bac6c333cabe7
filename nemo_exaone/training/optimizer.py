"""Megatron DDP + Megatron optimizer (optionally distributed) for a list of model chunks."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nemo_exaone.config.parallel import ParallelConfig, PrecisionConfig


@dataclass
class OptimizerSettings:
    lr: float = 3e-4
    min_lr: float = 3e-5
    weight_decay: float = 0.1
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    adam_eps: float = 1e-8
    clip_grad: float = 1.0


def wrap_ddp(model_chunks: list, parallel: ParallelConfig) -> list:
    """Wrap each chunk in Megatron's DDP (grad buckets; DP/SP/embedding grad reduction)."""
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig

    ddp_config = DistributedDataParallelConfig(
        grad_reduce_in_fp32=True,
        overlap_grad_reduce=False,
        use_distributed_optimizer=parallel.use_distributed_optimizer,
    )
    return [
        DistributedDataParallel(config=chunk.config, ddp_config=ddp_config, module=chunk,
                                disable_bucketing=i > 0)
        for i, chunk in enumerate(model_chunks)
    ]


def build_optimizer(model_chunks: list, settings: OptimizerSettings, parallel: ParallelConfig,
                    precision: PrecisionConfig):
    """Megatron-Core optimizer over DDP-wrapped chunks, with schedule hooks installed."""
    from megatron.core.distributed import finalize_model_grads
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer

    config = OptimizerConfig(
        optimizer="adam",
        lr=settings.lr,
        min_lr=settings.min_lr,
        weight_decay=settings.weight_decay,
        adam_beta1=settings.adam_beta1,
        adam_beta2=settings.adam_beta2,
        adam_eps=settings.adam_eps,
        clip_grad=settings.clip_grad,
        bf16=precision.dtype == "bf16",
        fp16=precision.dtype == "fp16",
        params_dtype=precision.torch_dtype,
        use_distributed_optimizer=parallel.use_distributed_optimizer,
    )
    optimizer = get_megatron_optimizer(config, model_chunks)
    for chunk in model_chunks:
        tconfig = chunk.config
        tconfig.finalize_model_grads_func = finalize_model_grads
        tconfig.grad_scale_func = optimizer.scale_loss if precision.dtype != "fp32" else None
        tconfig.no_sync_func = [c.no_sync for c in model_chunks] if len(model_chunks) > 1 \
            else model_chunks[0].no_sync
    return optimizer


def zero_grads(model_chunks: list, optimizer) -> None:
    for chunk in model_chunks:
        chunk.zero_grad_buffer()
    optimizer.zero_grad()


def global_grad_norm_is_finite(grad_norm: float | None) -> bool:
    return grad_norm is not None and bool(torch.isfinite(torch.tensor(grad_norm)))
