"""RMSNorm for the local (non-Transformer-Engine) layer spec.

Megatron-Core's torch-norm wrapper refuses sequence parallelism; this one marks its weight
``sequence_parallel`` so Megatron all-reduces its gradient over the tensor-parallel group,
exactly as Transformer Engine's norms do. The arithmetic matches HF Llama/EXAONE: normalise in
fp32, cast back, then scale.
"""

from __future__ import annotations

import torch


class ExaoneRMSNorm(torch.nn.Module):
    def __init__(self, config, hidden_size: int, eps: float = 1e-5, **_: object) -> None:
        super().__init__()
        self.eps = eps
        self.weight = torch.nn.Parameter(torch.ones(hidden_size, dtype=config.params_dtype))
        if config.sequence_parallel:
            self.weight.sequence_parallel = True

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        dtype = hidden_states.dtype
        x = hidden_states.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)
