"""Megatron-Core versions this package is tested against.

Megatron-Core changes internals between minor releases (and its checkpoints are not
backward compatible), so an untested version is refused up front with a clear message
instead of failing deep inside a schedule. ``NEMO_EXAONE_ALLOW_UNTESTED_MCORE=1`` overrides.
"""

from __future__ import annotations

import os
from importlib import metadata

TESTED_MEGATRON_CORE = ("0.16.1", "0.19.2")
_OVERRIDE_ENV = "NEMO_EXAONE_ALLOW_UNTESTED_MCORE"


def megatron_core_version() -> str:
    try:
        return metadata.version("megatron-core")
    except metadata.PackageNotFoundError:
        import megatron.core

        return getattr(megatron.core, "__version__", "unknown")


def check_megatron_core_version(version: str | None = None) -> str:
    """Return the installed version, or raise if it is not one we test."""
    version = version or megatron_core_version()
    base = version.split("+")[0].split("rc")[0].split(".dev")[0]
    if base in TESTED_MEGATRON_CORE or os.environ.get(_OVERRIDE_ENV) == "1":
        return version
    raise RuntimeError(
        f"megatron-core {version} is not a tested version (tested: "
        f"{', '.join(TESTED_MEGATRON_CORE)}). Install one of them, e.g. "
        f"pip install megatron-core=={TESTED_MEGATRON_CORE[0]}, or set {_OVERRIDE_ENV}=1 to "
        "try it anyway.")


def megatron_core_at_least(version: str) -> bool:
    def key(v: str) -> tuple[int, ...]:
        return tuple(int("".join(c for c in part if c.isdigit()) or 0)
                     for part in v.split("+")[0].split(".")[:3])

    return key(megatron_core_version()) >= key(version)
