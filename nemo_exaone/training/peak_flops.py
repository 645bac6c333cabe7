"""Peak FLOP/s of the device, the denominator of MFU.

GPUs: dense tensor-core peaks from the vendor datasheets (no sparsity), by dtype. CPUs: the
theoretical peak of the cores this process may run on (its affinity set), from what the CPU says
about itself: physical cores x clock x FLOPs per cycle of its widest FMA units (AVX-512, AVX2,
AMX for bf16, NEON). A *measured* GEMM rate is not a peak: on a shared machine it was measured
while other work ran, and MFU against it exceeded 100%. Ranks on one host share its cores, so
the job's CPU peak counts each host once. ``logging.peak_tflops`` in the config overrides all.
"""

from __future__ import annotations

import functools
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

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


@dataclass(frozen=True)
class CpuPeak:
    """The theoretical peak of a set of CPU cores, and how it was obtained (for the log)."""

    cores: int
    ghz: float
    flops_per_cycle: int
    isa: str

    @property
    def tflops(self) -> float:
        return self.cores * self.ghz * self.flops_per_cycle / 1e3

    def describe(self) -> str:
        return (f"CPU peak {self.tflops:.3f} TFLOP/s = {self.cores} cores x {self.ghz:.2f} GHz x "
                f"{self.flops_per_cycle} FLOP/cycle ({self.isa})")


def _flops_per_cycle(flags: set[str], vendor: str, machine: str, dtype: str) -> tuple[int, str]:
    """Per-core FLOPs/cycle of the widest units the flags announce (two FMA pipes assumed:
    an upper bound, so MFU is never overstated)."""
    if dtype == "bf16" and "amx_bf16" in flags:
        return 2048, "AMX bf16"
    if "avx512f" in flags:
        bf16 = dtype == "bf16" and "avx512_bf16" in flags  # dot products: 2x fp32's rate
        if vendor == "AuthenticAMD" and "avx512_vp2intersect" not in flags:
            return (64 if bf16 else 32), "AVX-512 on 256-bit FMA pipes (AMD Zen 4)"
        return (128 if bf16 else 64), "AVX-512 FMA" + (" bf16" if bf16 else "")
    if "avx2" in flags and "fma" in flags:
        return 32, "AVX2 FMA"
    if "avx" in flags:
        return 16, "AVX"
    if machine in ("aarch64", "arm64"):
        return 32, "NEON/SVE (4 x 128-bit FMA pipes assumed)"
    return 8, "SSE"


def cpu_peak(dtype: str = "fp32", cpuinfo: str | None = None, cpus: set[int] | None = None,
             max_khz: float | None = None) -> CpuPeak:
    """Theoretical peak of the CPUs in ``cpus`` (default: this process's affinity set).

    ``cpuinfo`` (text of /proc/cpuinfo) and ``max_khz`` (cpufreq's cpuinfo_max_freq) are read
    from the machine unless given. Hyper-threads of one core count once.
    """
    if cpus is None:
        cpus = set(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else set(
            range(os.cpu_count() or 1))
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    blocks = [b for b in cpuinfo.split("\n\n") if b.strip()]
    cores: set[tuple[str, str]] = set()
    flags: set[str] = set()
    vendor, mhz = "", 0.0
    for block in blocks:
        fields = {k.strip(): v.strip() for k, _, v in
                  (line.partition(":") for line in block.splitlines())}
        if int(fields.get("processor", -1)) not in cpus:
            continue
        cores.add((fields.get("physical id", "0"), fields.get("core id", fields["processor"])))
        flags |= set(fields.get("flags", fields.get("Features", "")).split())
        vendor = fields.get("vendor_id", vendor)
        mhz = max(mhz, float(fields.get("cpu MHz", 0) or 0))
        named = re.search(r"@\s*([\d.]+)\s*GHz", fields.get("model name", ""))
        if named:
            mhz = max(mhz, 1000 * float(named[1]))
    if max_khz is None:
        try:
            max_khz = float(Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
                            .read_text())
        except (OSError, ValueError):
            max_khz = 0.0
    ghz = max(mhz / 1000, max_khz / 1e6) or 3.0  # no clock anywhere: assume 3 GHz
    per_cycle, isa = _flops_per_cycle(flags, vendor, os.uname().machine, dtype)
    return CpuPeak(cores=len(cores) or len(cpus), ghz=ghz, flops_per_cycle=per_cycle, isa=isa)


@functools.lru_cache(maxsize=4)
def measured_cpu_peak_tflops(size: int = 1024, repeats: int = 5) -> float:
    """fp32 GEMM TFLOP/s of this process (best of ``repeats``): a benchmark figure, not a peak
    (it depends on what else runs); MFU uses :func:`cpu_peak`."""
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
    return cpu_peak(dtype).tflops


def job_peak_flops(dtype: str, fp8: bool, override: float | None, world_size: int,
                   local_world_size: int | None = None) -> float:
    """Combined peak FLOP/s of the devices the job runs on: one GPU per rank, but one CPU (its
    cores shared by every rank there) per host. ``override`` is per device (GPU) or per host."""
    import torch

    per_device = device_peak_tflops(dtype, fp8, override) * 1e12
    if torch.cuda.is_available():
        return per_device * world_size
    local = local_world_size or int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
    return per_device * max(1, world_size // max(1, local))
