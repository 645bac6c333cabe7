"""What the machine offers (CUDA, Transformer Engine), probed lazily and cached.

Model code asks here instead of importing optional packages at module top level, so the
package imports on a CPU-only machine without Transformer Engine.
"""

from __future__ import annotations

import functools
import importlib.util


@functools.lru_cache(maxsize=1)
def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


@functools.lru_cache(maxsize=1)
def transformer_engine_available() -> bool:
    """True when ``transformer_engine.pytorch`` imports (it needs CUDA and the driver)."""
    if not cuda_available() or importlib.util.find_spec("transformer_engine") is None:
        return False
    try:
        import transformer_engine.pytorch  # noqa: F401
    except Exception:  # noqa: BLE001 - any import failure means "not usable here"
        return False
    return True
