"""Let megatron-core 0.19 import where triton is missing (CPU machines, Python 3.11).

megatron-core 0.19 imports its MoE paged-stash triton kernels at import time; dense EXAONE
models never call them. Without triton, that one kernel module is replaced by an inert
stand-in whose kernels raise if anything ever calls them. This runs when ``nemo_exaone`` is
imported, before any Megatron import, and does nothing when triton is installed.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from typing import Any

_KERNEL_MODULE = "megatron.core.transformer.moe.ops.paged_stash"


def _missing_triton(attr: str):
    def kernel(*_: Any, **__: Any) -> None:
        raise RuntimeError(f"{_KERNEL_MODULE}.{attr} needs triton and CUDA; not available here")

    return kernel


def install_triton_stub_if_needed() -> bool:
    """Returns True when the stand-in was installed."""
    if _KERNEL_MODULE in sys.modules or importlib.util.find_spec("triton") is not None:
        return False
    module = types.ModuleType(_KERNEL_MODULE)
    module.GLOBAL_BLOCK_SIZE = 1024  # the value Megatron's kernel module defines
    for kernel in ("paged_stash_copy_kernel", "paged_stash_pop_kernel"):
        setattr(module, kernel, _missing_triton(kernel))
    sys.modules[_KERNEL_MODULE] = module
    return True
