"""Optional dtype conversion during checkpoint conversion ('keep' preserves bits).

Torch is imported lazily so that the CLI can list the choices without loading it.
"""

from __future__ import annotations

from typing import Any

DTYPE_CHOICES: tuple[str, ...] = ("keep", "bf16", "fp16", "fp32")


def parse_dtype(name: str | None) -> Any:
    """None for 'keep' (the source dtype), else the torch dtype; rejects unknown names."""
    import torch

    if name is None or name == "keep":
        return None
    table = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    if name not in table:
        raise ValueError(f"dtype {name!r}: choose one of {', '.join(DTYPE_CHOICES)}")
    return table[name]


def hf_dtype_name(dtype: Any) -> str:
    """'bfloat16', 'float32', ... as HF config.json's torch_dtype spells them."""
    return str(dtype).removeprefix("torch.")
