"""Progress bar for conversions (tqdm on a terminal, silent otherwise unless asked)."""

from __future__ import annotations

import sys
from typing import Any


def byte_progress(total: int, description: str, enabled: bool | None = None) -> Any:
    """A tqdm bar counting bytes; ``enabled=None`` shows it only on an interactive stderr."""
    from tqdm import tqdm

    if enabled is None:
        enabled = sys.stderr.isatty()
    return tqdm(total=total, desc=description, unit="B", unit_scale=True, unit_divisor=1024,
                disable=not enabled, dynamic_ncols=True)
