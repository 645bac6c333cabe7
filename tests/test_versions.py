"""Version pins that hold: pyproject admits exactly the megatron-core releases the runtime
accepts, and megatron-core 0.19 beside an old nvidia-resiliency-ext (as NGC containers ship
it) fails with an error naming the fix, while the remedies (upgrade, or megatron-core 0.16.1)
import. The old package is a stand-in on sys.path: a dist-info of the right version plus the
modules and symbols megatron-core probes, laid out as nvidia-resiliency-ext 0.5.0/0.6.0 are."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement

from nemo_exaone.runtime import versions
from nemo_exaone.runtime.versions import (
    RESILIENCY_EXT_FIX,
    TESTED_MEGATRON_CORE,
    resiliency_ext_conflict,
)

ROOT = Path(__file__).resolve().parents[1]
# The interpreter of each megatron-core line: this one where it runs that line (the Makefile's
# megatron-core 0.19.2 leg runs this file too), else the environment make test builds.
MCORE019_PY = ROOT / ".venv-mcore019" / "bin" / "python"
MCORE016_PY = ROOT / ".venv" / "bin" / "python"
# Every megatron-core release on PyPI up to the newest tested one, and the next ones.
RELEASES = ["0.12.3", "0.13.1", "0.14.0", "0.15.0", "0.15.3", "0.16.0", "0.16.1", "0.17.0",
            "0.17.1", "0.18.0", "0.18.2", "0.19.0", "0.19.2", "0.19.3", "0.20.0", "1.0.0"]


def _mcore_requirement() -> Requirement:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    [req] = [Requirement(d) for d in deps if Requirement(d).name == "megatron-core"]
    return req


@pytest.mark.parametrize("release", RELEASES)
def test_pyproject_admits_exactly_the_tested_megatron_core(release, monkeypatch):
    monkeypatch.delenv("NEMO_EXAONE_ALLOW_UNTESTED_MCORE", raising=False)
    admitted = _mcore_requirement().specifier.contains(release)
    try:
        versions.check_megatron_core_version(release)
        accepted = True
    except RuntimeError:
        accepted = False
    assert admitted == accepted == (release in TESTED_MEGATRON_CORE), (
        f"pyproject.toml megatron-core{_mcore_requirement().specifier} admits {release}: "
        f"{admitted}; runtime accepts it: {accepted}")


def test_shipped_install_recipes_pin_a_tested_megatron_core():
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    [docker_default] = re.findall(r"^ARG MCORE_VERSION=(\S+)$", dockerfile, re.M)
    assert docker_default in TESTED_MEGATRON_CORE
    assert "versions.py --check-resiliency-ext" in dockerfile
    assert f'"{RESILIENCY_EXT_FIX}"' in dockerfile
    wheels = (ROOT / "scripts" / "gpu_wheels.sh").read_text()
    [wheels_default] = re.findall(r'MCORE_VERSION="\$\{MCORE_VERSION:-([^}]+)\}"', wheels)
    assert wheels_default in TESTED_MEGATRON_CORE


@pytest.mark.parametrize("mcore,nvrx,conflict", [
    ("0.19.2", "0.5.0", True), ("0.19.2", "0.5.1rc2", True), ("0.19.2", "0.6.0", False),
    ("0.19.2", "0.7.0+nv25.10", False), ("0.19.2", None, False), ("0.16.1", "0.5.0", False),
    ("0.20.0", "0.4.1", True), (None, "0.5.0", False)])
def test_resiliency_ext_conflict_rule(mcore, nvrx, conflict):
    problem = resiliency_ext_conflict(mcore, nvrx)
    assert (problem is not None) == conflict
    if conflict:
        assert f"nvidia-resiliency-ext {nvrx}" in problem and RESILIENCY_EXT_FIX in problem
        assert f"megatron-core=={TESTED_MEGATRON_CORE[0]}" in problem


def _stand_in_nvrx(root: Path, version: str) -> Path:
    """nvidia-resiliency-ext as megatron-core sees it: metadata, a package whose __version__
    comes from that metadata, and the async-checkpoint symbols (0.6 added
    get_write_results_queue; 0.5 has every module, so Megatron's probe reaches its assert)."""
    site = root / f"nvrx-{version}"
    pkg = site / "nvidia_resiliency_ext"
    ckpt = pkg / "checkpointing" / "async_ckpt"
    ckpt.mkdir(parents=True)
    (pkg / "__init__.py").write_text(
        "from importlib.metadata import version\n"
        "__version__ = version('nvidia-resiliency-ext')\n")
    (pkg / "checkpointing" / "__init__.py").write_text("")
    (ckpt / "__init__.py").write_text("")
    (ckpt / "core.py").write_text("class AsyncCallsQueue: pass\nclass AsyncRequest: pass\n")
    (ckpt / "cached_metadata_filesystem_reader.py").write_text(
        "class CachedMetadataFileSystemReader: pass\n")
    queue = "def get_write_results_queue(mp_mode='spawn'): return None\n"
    (ckpt / "filesystem_async.py").write_text(
        "_results_queue = None\nclass FileSystemWriterAsync: pass\n"
        + (queue if version >= "0.6" else ""))
    (ckpt / "state_dict_saver.py").write_text(
        "class CheckpointMetadataCache: pass\n"
        "def save_state_dict_async_plan(*a, **k): pass\n"
        "def save_state_dict_async_finalize(*a, **k): pass\n")
    info = site / f"nvidia_resiliency_ext-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: nvidia-resiliency-ext\nVersion: {version}\n")
    return site


def _run(python: Path, site: Path, code: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    return subprocess.run([str(python), *(["-c", code] if code else []), *args], env=env,
                          cwd=site, capture_output=True, text=True, timeout=240)


# megatron-core 0.19 imports triton kernels at import time; this machine may lack triton, so
# the raw-failure run installs the project's stand-in without importing the package.
_RAW_IMPORT = f"""
import importlib.util
spec = importlib.util.spec_from_file_location(
    "triton_stub", {str(ROOT / "nemo_exaone" / "runtime" / "triton_stub.py")!r})
stub = importlib.util.module_from_spec(spec); spec.loader.exec_module(stub)
stub.install_triton_stub_if_needed()
import megatron.core.dist_checkpointing.strategies.torch
"""
_PACKAGE_IMPORT = """
import nemo_exaone
from megatron.core.dist_checkpointing.strategies import torch as strategy
from importlib.metadata import version
print("imported megatron-core", version("megatron-core"), "nvrx", version("nvidia-resiliency-ext"),
      "HAVE_NVRX", getattr(strategy, "HAVE_NVRX", None), "from", nemo_exaone.__file__)
"""


def _interpreter(line: str, default: Path) -> Path | None:
    if versions.megatron_core_version().startswith(line):
        return Path(sys.executable)
    return default if default.exists() else None


@pytest.fixture(scope="module")
def mcore019_python() -> Path:
    python = _interpreter("0.19.", MCORE019_PY)
    if python is None:
        pytest.skip(".venv-mcore019 is absent (make test builds it with scripts/setup_mcore019.sh)")
    return python


@pytest.mark.slow
def test_mcore019_beside_old_resiliency_ext_fails_naming_the_fix(mcore019_python, tmp_path):
    site = _stand_in_nvrx(tmp_path, "0.5.0")
    # What a user of megatron-core alone sees: a bare assertion deep inside the import.
    raw = _run(mcore019_python, site, _RAW_IMPORT)
    assert raw.returncode != 0
    assert "AssertionError: Minimum required nvidia-resiliency-ext package version is 0.6.0" \
        in raw.stderr, raw.stderr[-2000:]
    # Through the package: the first Megatron import names both versions and the fixes.
    ours = _run(mcore019_python, site, _PACKAGE_IMPORT)
    assert ours.returncode != 0
    assert ("RuntimeError: megatron-core 0.19.2 cannot be imported beside "
            "nvidia-resiliency-ext 0.5.0") in ours.stderr, ours.stderr[-2000:]
    assert RESILIENCY_EXT_FIX in ours.stderr and "AssertionError" not in ours.stderr
    # The Dockerfile's test (versions.py run as a plain file) says the pair needs the upgrade.
    check = _run(mcore019_python, site, "", str(ROOT / "nemo_exaone/runtime/versions.py"),
                 "--check-resiliency-ext")
    assert check.returncode == 1 and RESILIENCY_EXT_FIX in check.stderr


@pytest.mark.slow
def test_remedies_import(mcore019_python, tmp_path):
    # The Dockerfile's remedy: nvidia-resiliency-ext upgraded to >= 0.6.
    site = _stand_in_nvrx(tmp_path, "0.6.0")
    upgraded = _run(mcore019_python, site, _PACKAGE_IMPORT)
    assert upgraded.returncode == 0, upgraded.stderr[-2000:]
    assert "megatron-core 0.19.2 nvrx 0.6.0 HAVE_NVRX True" in upgraded.stdout
    check = _run(mcore019_python, site, "", str(ROOT / "nemo_exaone/runtime/versions.py"),
                 "--check-resiliency-ext")
    assert check.returncode == 0, check.stderr
    # The other remedy: megatron-core 0.16.1 never asserts on it.
    python016 = _interpreter("0.16.", MCORE016_PY)
    assert python016 is not None, f"no megatron-core 0.16.1 interpreter ({MCORE016_PY})"
    old = _stand_in_nvrx(tmp_path / "old", "0.5.0")
    pinned = _run(python016, old, _PACKAGE_IMPORT)
    assert pinned.returncode == 0, pinned.stderr[-2000:]
    assert "megatron-core 0.16.1 nvrx 0.5.0" in pinned.stdout
