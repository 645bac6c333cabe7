"""Megatron-Core versions this package is tested against, and the packages beside it.

Megatron-Core changes internals between minor releases (and its checkpoints are not
backward compatible), so an untested version is refused up front with a clear message
instead of failing deep inside a schedule. ``NEMO_EXAONE_ALLOW_UNTESTED_MCORE=1`` overrides.
pyproject.toml admits exactly these releases (tests/test_versions.py keeps the two in step).

megatron-core 0.19 asserts nvidia-resiliency-ext >= 0.6 at ``import megatron.core`` whenever
that package is installed (``dist_checkpointing/strategies/nvrx.py``), and NGC PyTorch
containers have shipped 0.5.x. That pair is detected from package metadata alone, before any
Megatron import, and turned into an error naming the fix. This file runs standalone too
(``python nemo_exaone/runtime/versions.py --check-resiliency-ext``, no package import), which
is how docker/Dockerfile decides whether to upgrade nvidia-resiliency-ext.
"""

from __future__ import annotations

import importlib.abc
import os
import sys
from importlib import metadata

TESTED_MEGATRON_CORE = ("0.16.1", "0.19.2")
_OVERRIDE_ENV = "NEMO_EXAONE_ALLOW_UNTESTED_MCORE"
# NeMo 2 (nemo-toolkit 2.7.x) drives megatron-core 0.15.x only (0.16 changed the optimizer API
# its MegatronStrategy calls). These releases are admitted after allow_nemo_megatron_core(),
# which nemo_exaone.nemo calls on import (the .venv-nemo leg), never otherwise.
NEMO_MEGATRON_CORE = ("0.15.3",)
_NEMO_LINE = {"allowed": False}


def allow_nemo_megatron_core() -> None:
    """Admit :data:`NEMO_MEGATRON_CORE` too: called by ``nemo_exaone.nemo`` (NeMo present)."""
    _NEMO_LINE["allowed"] = True
RESILIENCY_EXT = "nvidia-resiliency-ext"
# megatron-core from this version on asserts RESILIENCY_EXT >= RESILIENCY_EXT_MIN at import.
RESILIENCY_EXT_STRICT_FROM = "0.19"
RESILIENCY_EXT_MIN = "0.6.0"
RESILIENCY_EXT_FIX = "nvidia-resiliency-ext>=0.6,<0.8"  # the range docker/Dockerfile installs


def _version_key(version: str) -> tuple[int, ...]:
    """(major, minor, patch) of a version string; local/pre-release tags are ignored."""
    return tuple(int("".join(c for c in part.split("rc")[0] if c.isdigit()) or 0)
                 for part in version.split("+")[0].split(".")[:3])


def installed_version(distribution: str) -> str | None:
    """Version of an installed distribution from its metadata (nothing is imported)."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


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
    if _NEMO_LINE["allowed"] and base in NEMO_MEGATRON_CORE:
        return version
    raise RuntimeError(
        f"megatron-core {version} is not a tested version (tested: "
        f"{', '.join(TESTED_MEGATRON_CORE)}). Install one of them, e.g. "
        f"pip install megatron-core=={TESTED_MEGATRON_CORE[0]}, or set {_OVERRIDE_ENV}=1 to "
        "try it anyway.")


def megatron_core_at_least(version: str) -> bool:
    return _version_key(megatron_core_version()) >= _version_key(version)


def resiliency_ext_conflict(mcore: str | None, nvrx: str | None) -> str | None:
    """Why ``import megatron.core`` will fail with these two versions installed, or None."""
    if mcore is None or nvrx is None:
        return None
    if (_version_key(mcore) < _version_key(RESILIENCY_EXT_STRICT_FROM)
            or _version_key(nvrx) >= _version_key(RESILIENCY_EXT_MIN)):
        return None
    return (f"megatron-core {mcore} cannot be imported beside {RESILIENCY_EXT} {nvrx}: "
            f"megatron-core >= {RESILIENCY_EXT_STRICT_FROM} asserts {RESILIENCY_EXT} >= "
            f"{RESILIENCY_EXT_MIN} at import (megatron/core/dist_checkpointing/strategies/"
            f"nvrx.py). Fix with one of: pip install '{RESILIENCY_EXT_FIX}' (what "
            f"docker/Dockerfile does); pip install megatron-core=={TESTED_MEGATRON_CORE[0]} "
            f"(it does not use {RESILIENCY_EXT}); or pip uninstall {RESILIENCY_EXT} if nothing "
            "else here needs it.")


def check_resiliency_ext() -> None:
    """Raise the clear error if the installed megatron-core cannot import beside the
    installed nvidia-resiliency-ext."""
    problem = resiliency_ext_conflict(installed_version("megatron-core"),
                                      installed_version(RESILIENCY_EXT))
    if problem:
        raise RuntimeError(problem)


class _MegatronImportGuard(importlib.abc.MetaPathFinder):
    """Turns the first ``import megatron.core`` into the clear error (the data commands,
    which never import Megatron, keep working)."""

    def __init__(self, problem: str) -> None:
        self.problem = problem

    def find_spec(self, fullname, path=None, target=None):  # noqa: ANN001 - finder protocol
        if fullname == "megatron.core" or fullname.startswith("megatron.core."):
            raise RuntimeError(self.problem)
        return None


def install_megatron_import_guard() -> bool:
    """Called when ``nemo_exaone`` is imported, before any Megatron import. Returns True when
    the installed versions conflict and the guard was put in place."""
    problem = resiliency_ext_conflict(installed_version("megatron-core"),
                                      installed_version(RESILIENCY_EXT))
    if not problem or "megatron.core" in sys.modules:
        return False
    if not any(isinstance(f, _MegatronImportGuard) for f in sys.meta_path):
        sys.meta_path.insert(0, _MegatronImportGuard(problem))
    return True


def _main(argv: list[str]) -> int:
    """``--check-resiliency-ext``: exit 1 with the reason when megatron-core would not
    import beside the installed nvidia-resiliency-ext, else 0."""
    if argv != ["--check-resiliency-ext"]:
        print("usage: python versions.py --check-resiliency-ext", file=sys.stderr)
        return 2
    problem = resiliency_ext_conflict(installed_version("megatron-core"),
                                      installed_version(RESILIENCY_EXT))
    if problem:
        print(problem, file=sys.stderr)
        return 1
    print(f"megatron-core {installed_version('megatron-core')}, {RESILIENCY_EXT} "
          f"{installed_version(RESILIENCY_EXT) or 'not installed'}: compatible")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
