"""Run Megatron-Core on a machine without CUDA (development and CI).

Megatron-Core assumes CUDA in a few hundred places: ``torch.cuda.current_device()`` as a
device, hard-coded ``device="cuda"`` and ``.cuda()``, the CUDA RNG tracker, CUDA streams and
assertions on ``'torch.cuda.FloatTensor'``. Rather than patching each call site, this module
(1) gives ``torch.cuda`` CPU-backed stand-ins for the handful of functions Megatron calls
and (2) installs a :class:`torch.overrides.TorchFunctionMode` that maps every CUDA device
argument to the CPU. It is applied once, before Megatron-Core is used, and only when CUDA is
absent: on a GPU machine :func:`enable_cpu_compat` does nothing.

The mode is per thread; :func:`cpu_compat_thread` re-enters it in worker threads.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

_ENABLED = False
_MODE: _CudaToCpuMode | None = None

_CUDA_TYPE_NAMES = {
    torch.float32: "torch.cuda.FloatTensor",
    torch.float16: "torch.cuda.HalfTensor",
    torch.bfloat16: "torch.cuda.BFloat16Tensor",
    torch.float64: "torch.cuda.DoubleTensor",
    torch.int64: "torch.cuda.LongTensor",
    torch.int32: "torch.cuda.IntTensor",
    torch.uint8: "torch.cuda.ByteTensor",
    torch.bool: "torch.cuda.BoolTensor",
}
_CPU = torch.device("cpu")


def _map_device(device: Any) -> Any:
    """CUDA device spec (str, torch.device, int index) -> CPU; anything else unchanged."""
    if isinstance(device, torch.device):
        return _CPU if device.type == "cuda" else device
    if isinstance(device, str):
        return "cpu" if device.startswith("cuda") else device
    if isinstance(device, int) and not isinstance(device, bool):
        return _CPU
    return device


class _CudaToCpuMode(TorchFunctionMode):
    """Rewrites CUDA device arguments to CPU for every torch function call."""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: D105
        kwargs = kwargs or {}
        if func is torch.Tensor.cuda:
            return args[0]
        if func is torch.Tensor.type and len(args) == 1 and not kwargs:
            tensor = args[0]
            return _CUDA_TYPE_NAMES.get(tensor.dtype, func(*args))
        if "device" in kwargs:
            kwargs["device"] = _map_device(kwargs["device"])
        # Pinned (page-locked) memory needs an accelerator; on a CPU a plain tensor is the same.
        if kwargs.get("pin_memory"):
            kwargs["pin_memory"] = False
        if func is torch.Tensor.pin_memory:
            return args[0]
        if func is torch.Tensor.to and len(args) > 1:
            args = (args[0], _map_device(args[1]), *args[2:])
        return func(*args, **kwargs)


class _DummyStream:
    """Stands in for ``torch.cuda.Stream``: on CPU every op is synchronous."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def wait_stream(self, *_: Any) -> None:
        pass

    def wait_event(self, *_: Any) -> None:
        pass

    def record_event(self, event: Any = None) -> Any:
        return event or _DummyEvent()

    def synchronize(self) -> None:
        pass

    def query(self) -> bool:
        return True

    def __enter__(self) -> _DummyStream:
        return self

    def __exit__(self, *_: Any) -> None:
        pass


class _DummyEvent:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def record(self, *_: Any) -> None:
        pass

    def wait(self, *_: Any) -> None:
        pass

    def synchronize(self) -> None:
        pass

    def query(self) -> bool:
        return True

    def elapsed_time(self, *_: Any) -> float:
        return 0.0


def _patch_torch_cuda() -> None:
    cuda = torch.cuda
    cuda.current_device = lambda: _CPU  # type: ignore[assignment]
    cuda.synchronize = lambda *a, **k: None  # type: ignore[assignment]
    cuda.current_stream = lambda *a, **k: _DummyStream()  # type: ignore[assignment]
    cuda.default_stream = lambda *a, **k: _DummyStream()  # type: ignore[assignment]
    cuda.Stream = _DummyStream  # type: ignore[assignment,misc]
    cuda.Event = _DummyEvent  # type: ignore[assignment,misc]
    cuda.stream = lambda *a, **k: contextlib.nullcontext()  # type: ignore[assignment]
    cuda.set_device = lambda *a, **k: None  # type: ignore[assignment]
    cuda.empty_cache = lambda *a, **k: None  # type: ignore[assignment]
    cuda.memory_allocated = lambda *a, **k: 0  # type: ignore[assignment]
    cuda.max_memory_allocated = lambda *a, **k: 0  # type: ignore[assignment]
    cuda.memory_reserved = lambda *a, **k: 0  # type: ignore[assignment]
    cuda.reset_peak_memory_stats = lambda *a, **k: None  # type: ignore[assignment]
    # The "CUDA" RNG is the CPU default generator: the tracker's fork() swaps its state.
    cuda.get_rng_state = lambda *a, **k: torch.get_rng_state()  # type: ignore[assignment]
    cuda.random.get_rng_state = cuda.get_rng_state  # type: ignore[assignment]
    cuda.set_rng_state = lambda state, *a, **k: torch.set_rng_state(state)  # type: ignore
    cuda.get_rng_state_all = lambda: [torch.get_rng_state()]  # type: ignore[assignment]
    # An empty list (no devices: what Lightning records when CUDA is absent) sets nothing.
    cuda.set_rng_state_all = lambda states: states and torch.set_rng_state(states[0])  # type: ignore
    cuda.manual_seed = lambda seed: torch.default_generator.manual_seed(int(seed))  # type: ignore
    cuda.manual_seed_all = cuda.manual_seed  # type: ignore[assignment]


def _patch_megatron_rng() -> None:
    from megatron.core.tensor_parallel import random as mrandom

    mrandom._set_cuda_rng_state = lambda state, *a, **k: torch.set_rng_state(state)
    mrandom._get_cuda_rng_state = lambda *a, **k: torch.get_rng_state()
    # fork() warns when the CPU generator moved inside the "GPU" context; on CPU the two
    # generators are one, so the warning is expected and meaningless.
    logging.getLogger(mrandom.__name__).addFilter(
        lambda record: "CPU RNG state changed" not in record.getMessage())


def _patch_causal_mask() -> None:
    """Megatron builds its default causal mask with ``device="cuda"``. The device-mapping mode
    covers forward passes, but not the backward of ``torch.autograd.backward`` called from
    Python, which is where activation recomputation re-runs the forward; so the mask function
    itself gets a CPU version (also where ``fused_softmax`` imported it by name)."""
    from megatron.core.fusions import fused_softmax
    from megatron.core.transformer import utils

    @functools.lru_cache(maxsize=8)
    def causal_mask(sq: int) -> torch.Tensor:
        return torch.triu(torch.ones(sq, sq, dtype=torch.bool, device="cpu"), diagonal=1)

    utils.get_default_causal_mask = causal_mask
    fused_softmax.get_default_causal_mask = causal_mask


def cpu_compat_active() -> bool:
    return _ENABLED


def enable_cpu_compat() -> bool:
    """Make Megatron-Core usable without CUDA. Returns True if the layer is (now) active.

    Idempotent; a no-op when CUDA is available.
    """
    global _ENABLED, _MODE
    if _ENABLED:
        return True
    if torch.cuda.is_available():
        return False
    _patch_torch_cuda()
    _patch_megatron_rng()
    _patch_causal_mask()
    _MODE = _CudaToCpuMode()
    _MODE.__enter__()
    _ENABLED = True
    return True


@contextlib.contextmanager
def cpu_compat_thread() -> Iterator[None]:
    """Enter the device-mapping mode in a worker thread (modes are thread-local)."""
    if not _ENABLED:
        yield
        return
    with _CudaToCpuMode():
        yield
