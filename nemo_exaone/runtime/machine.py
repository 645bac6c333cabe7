"""Can this machine run the requested layout and precision? (CUDA, Transformer Engine.)

The settings themselves are checked in :mod:`nemo_exaone.config.parallel` (plain data, no
probing); what depends on the machine is checked here, before any heavy work, with the same
kind of error: the field, the reason and the fix.
"""

from __future__ import annotations

from nemo_exaone.config.errors import ConfigError
from nemo_exaone.config.parallel import ParallelConfig, PrecisionConfig


def check_machine(parallel: ParallelConfig | None = None,
                  precision: PrecisionConfig | None = None, *,
                  cuda_available: bool | None = None,
                  te_available: bool | None = None) -> None:
    """Refuse settings this machine cannot run (context parallelism or FP8 without CUDA,
    FP8 without Transformer Engine). ``cuda_available``/``te_available``: probed if None."""
    from nemo_exaone.runtime import features

    def cuda() -> bool:
        return features.cuda_available() if cuda_available is None else cuda_available

    if parallel is not None and parallel.context_parallel_size > 1 and not cuda():
        raise ConfigError(
            f"context_parallel_size={parallel.context_parallel_size} needs CUDA with "
            "Transformer Engine: Megatron-Core's local attention (the CPU path) has no "
            "context-parallel implementation; use context_parallel_size=1 on CPU")
    if precision is None or not precision.fp8:
        return
    if not cuda():
        raise ConfigError("precision.fp8=true needs a CUDA GPU (Hopper or newer) with "
                          "Transformer Engine; this machine has no CUDA. Use precision.fp8=false")
    te = features.transformer_engine_available() if te_available is None else te_available
    if not te:
        raise ConfigError("precision.fp8=true needs Transformer Engine: "
                          "pip install 'nemo-exaone[gpu]' (transformer-engine[pytorch])")
