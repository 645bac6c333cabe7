"""Make Megatron-Core's C++ dataset helpers importable on any machine, CPU-only included.

``GPTDataset`` and ``BlendedDataset`` build their sample and blending indices with
``megatron.core.datasets.helpers_cpp``, a pybind11 extension. The megatron-core 0.16.1 wheel
ships it prebuilt (``helpers_cpp.cpython-311-x86_64-linux-gnu.so``), so nothing is compiled
at run time and no CUDA is involved. Installs without it (a source build of a newer
megatron-core, an unusual platform) would fail on first use: Megatron's own
``compile_helpers()`` runs ``make`` in the package directory, whose Makefile the wheel does
not ship. :func:`ensure_dataset_helpers` covers that case by compiling the ``helpers.cpp``
that the package does ship with the system C++ compiler and pybind11's headers into a cache
directory, and registering the result under Megatron's module name.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from types import ModuleType

__all__ = ["ensure_dataset_helpers", "compile_dataset_helpers"]

_MODULE = "megatron.core.datasets.helpers_cpp"


def _default_cache_dir() -> Path:
    base = os.environ.get("NEMO_EXAONE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "nemo_exaone"
    )
    return Path(base) / "megatron_helpers"


def compile_dataset_helpers(build_dir: str | Path) -> Path:
    """Compile Megatron's ``helpers.cpp`` into ``build_dir``; return the extension's path.

    Needs a C++17 compiler (``c++``/``g++``) and ``pybind11`` (``pip install pybind11``).
    """
    import megatron.core.datasets as datasets_pkg

    source = Path(datasets_pkg.__file__).parent / "helpers.cpp"
    if not source.is_file():
        raise FileNotFoundError(f"{source}: Megatron-Core's helpers.cpp is missing")
    compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if compiler is None:
        raise FileNotFoundError("no C++ compiler found (install g++ or set CXX)")
    try:
        import pybind11
    except ImportError:
        raise ValueError(
            "compiling Megatron's dataset helpers needs pybind11: pip install pybind11"
        ) from None
    build_dir = Path(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    target = build_dir / ("helpers_cpp" + sysconfig.get_config_var("EXT_SUFFIX"))
    temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    command = [
        compiler, "-O3", "-shared", "-std=c++17", "-fPIC", "-fvisibility=hidden",
        f"-I{pybind11.get_include()}", f"-I{sysconfig.get_paths()['include']}",
        str(source), "-o", str(temp),
    ]
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        temp.unlink(missing_ok=True)
        raise RuntimeError(f"compiling {source} failed:\n{completed.stderr[-4000:]}")
    os.replace(temp, target)
    return target


def _load_extension(path: Path) -> ModuleType:
    loader = importlib.machinery.ExtensionFileLoader(_MODULE, str(path))
    spec = importlib.util.spec_from_file_location(_MODULE, path, loader=loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    sys.modules[_MODULE] = module
    return module


def ensure_dataset_helpers(cache_dir: str | Path | None = None) -> ModuleType:
    """Return Megatron's ``helpers_cpp`` module, compiling it once into ``cache_dir`` if the
    installed megatron-core lacks it. Call before building GPT/blended datasets."""
    try:
        return importlib.import_module(_MODULE)
    except ImportError:
        pass
    import megatron.core

    version = getattr(megatron.core, "__version__", "unknown")
    build_dir = Path(cache_dir) if cache_dir else _default_cache_dir() / version
    target = build_dir / ("helpers_cpp" + sysconfig.get_config_var("EXT_SUFFIX"))
    if not target.is_file():
        compile_dataset_helpers(build_dir)
    return _load_extension(target)
