"""Optional dtype conversion during checkpoint conversion ('keep' preserves bits)."""

from __future__ import annotations

import torch

DTYPE_CHOICES: dict[str, torch.dtype | None] = {
    "keep": None, "bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32,
}

HF_DTYPE_NAMES: dict[torch.dtype, str] = {
    torch.bfloat16: "bfloat16", torch.float16: "float16", torch.float32: "float32",
}


def parse_dtype(name: str | None) -> torch.dtype | None:
    """None for 'keep' (the source dtype), else the torch dtype; rejects unknown names."""
    if name is None:
        return None
    if name not in DTYPE_CHOICES:
        raise ValueError(f"dtype {name!r}: choose one of {', '.join(DTYPE_CHOICES)}")
    return DTYPE_CHOICES[name]
