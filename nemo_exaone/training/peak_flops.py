"""Peak FLOP/s of the device, the denominator of MFU.

GPUs: dense tensor-core peaks from the vendor datasheets (no sparsity), by dtype. A CPU has
no meaningful datasheet number for PyTorch, so its "peak" is measured: the fp32 matmul rate
of this process on a large square GEMM. CPU MFU therefore reads "fraction of what this CPU's
GEMM achieves", which is the useful comparison for a CPU run. ``logging.peak_tflops`` in the
config overrides both.
"""

from __future__ import annotations

import functools
import time

# name fragment (lower case) -> {dtype: dense TFLOP/s}; first match wins, so more specific
# names come first.
GPU_PEAK_TFLOPS: tuple[tuple[str, dict[str, float]], ...] = (
    ("h200", {"bf16": 989.4, "fp16": 989.4, "fp8": 1978.9, "fp32": 66.9}),
    ("h100 pcie", {"bf16": 756.0, "fp16": 756.0, "fp8": 1513.0, "fp32": 51.2}),
    ("h100", {"bf16": 989.4, "fp16": 989.4, "fp8": 1978.9, "fp32": 66.9}),
    ("h800", {"bf16": 989.4, "fp16": 989.4, "fp8": 1978.9, "fp32": 66.9}),
    ("gh200", {"bf16": 989.4, "fp16": 989.4, "fp8": 1978.9, "fp32": 66.9}),
    ("b200", {"bf16": 2250.0, "fp16": 2250.0, "fp8": 4500.0, "fp32": 80.0}),
    ("a100", {"bf16": 312.0, "fp16": 312.0, "fp32": 19.5}),
    ("l40s", {"bf16": 362.1, "fp16": 362.1, "fp8": 733.0, "fp32": 91.6}),
    ("a10g", {"bf16": 125.0, "fp16": 125.0, "fp32": 31.2}),
)


def gpu_peak_tflops(device_name: str, dtype: str, fp8: bool = False) -> float | None:
    """Datasheet dense peak for a GPU name as ``torch.cuda.get_device_name`` reports it."""
    name = device_name.lower()
    key = "fp8" if fp8 else dtype
    for fragment, table in GPU_PEAK_TFLOPS:
        if fragment in name:
            return table.get(key) or table.get(dtype)
    return None


@functools.lru_cache(maxsize=4)
def measured_cpu_peak_tflops(size: int = 1024, repeats: int = 5) -> float:
    """fp32 GEMM TFLOP/s of this process (best of ``repeats``), with its current threads."""
    import torch

    a = torch.randn(size, size)
    b = torch.randn(size, size)
    torch.mm(a, b)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best / 1e12


def device_peak_tflops(dtype: str, fp8: bool = False, override: float | None = None) -> float:
    """Peak TFLOP/s of one device of this process (see module docstring)."""
    if override:
        return float(override)
    import torch

    if torch.cuda.is_available():
        peak = gpu_peak_tflops(torch.cuda.get_device_name(), dtype, fp8)
        if peak is not None:
            return peak
        return float("nan")  # unknown GPU: MFU is reported as nan unless overridden
    return measured_cpu_peak_tflops()
