"""Megatron-Core's warnings about optional kernels it falls back from: said once, or not at all.

Without Transformer Engine or Apex, importing Megatron-Core's optimizer, FSDP and layer-spec
modules prints five multi-line ``UserWarning``s, in every command, worker process and script.
On a CPU they are expected (neither package exists for CPUs): nothing is shown. On a CUDA
machine the fact matters (slower kernels, no FP8): the run's log says it once, in one line
(:func:`missing_kernels_note`).
"""

from __future__ import annotations

import warnings

# Beginnings of the messages (``warnings`` matches a message regex at its start).
MISSING_KERNEL_MESSAGES: tuple[str, ...] = (
    "Transformer Engine and Apex are not installed",
    "Apex is not installed",
)


# Megatron-Core 0.16's TransformerConfig warns about its own default cuda_graph_scope on every
# model or layout it builds (conversion, training); we never set it.
DEFAULT_NOISE_MESSAGES: tuple[str, ...] = ("full scope is deprecated",)


def quiet_missing_kernel_warnings() -> None:
    """Silence Megatron-Core's missing-kernel warnings (and its warning about its own default
    CUDA-graph scope) in this process (idempotent)."""
    for message in MISSING_KERNEL_MESSAGES + DEFAULT_NOISE_MESSAGES:
        warnings.filterwarnings("ignore", message=message, category=UserWarning)


def missing_kernels_note() -> str | None:
    """One line for a run's log on a CUDA machine without Transformer Engine; None on a CPU
    or where Transformer Engine imports."""
    from nemo_exaone.runtime.features import cuda_available, transformer_engine_available

    if not cuda_available() or transformer_engine_available():
        return None
    return ("Transformer Engine / Apex not installed: Megatron-Core runs its PyTorch fallbacks "
            "(local layer spec, torch optimizers; no FP8)")
