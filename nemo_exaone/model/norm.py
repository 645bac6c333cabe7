"""RMSNorm for the local (non-Transformer-Engine) layer spec.

Megatron-Core's torch-norm wrapper refuses sequence parallelism; this one marks its weight
``sequence_parallel`` so Megatron all-reduces its gradient over the tensor-parallel group,
exactly as Transformer Engine's norms do. The arithmetic matches HF Llama/EXAONE: normalise in
fp32, cast back, then scale.

The weight is placed where Megatron places its own: on the current CUDA device unless
``config.use_cpu_initialization`` (then on the default device, which a ``torch.device("meta")``
context overrides for parameter counting).
"""

from __future__ import annotations

import torch


class ExaoneRMSNorm(torch.nn.Module):
    def __init__(self, config, hidden_size: int, eps: float = 1e-5, **_: object) -> None:
        super().__init__()
        self.eps = eps
        # Same rule as Megatron's linears and embeddings: with CPU initialisation off, an
        # explicit current CUDA device (else the norms would stay on the CPU beside CUDA
        # weights and the first forward would fail).
        device = None if config.use_cpu_initialization else torch.cuda.current_device()
        self.weight = torch.nn.Parameter(
            torch.ones(hidden_size, dtype=config.params_dtype, device=device))
        if config.sequence_parallel:
            self.weight.sequence_parallel = True

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        dtype = hidden_states.dtype
        x = hidden_states.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)
