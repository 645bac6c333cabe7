"""scripts/gpu_install.py's choice of what to install on the offline GPU machine: pinned
packages always, others only when the machine lacks them or has a version a shipped wheel's
requirement refuses (the machine's torch stack is otherwise kept). Wheels here are real zip
files with the METADATA that pip and the script read."""

from __future__ import annotations

import importlib.util
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gpu_install():
    spec = importlib.util.spec_from_file_location("gpu_install", ROOT / "scripts" / "gpu_install.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _wheel(folder: Path, name: str, version: str, requires: list[str]) -> Path:
    path = folder / f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
    meta = "".join(f"Requires-Dist: {r}\n" for r in requires)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{name.replace('-', '_')}-{version}.dist-info/METADATA",
                    f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n{meta}")
    return path


def test_plan_keeps_fitting_machine_packages_and_replaces_the_rest(gpu_install, tmp_path):
    wheels = [
        _wheel(tmp_path, "megatron-core", "0.19.2", ["torch>=2.6.0", "packaging>=24.2",
                                                      "wandb; extra == 'training'"]),
        _wheel(tmp_path, "nemo-exaone", "0.1.0", ["tqdm", "psutil", "pytest>=8; extra == 'dev'"]),
        _wheel(tmp_path, "packaging", "26.4", []),
        _wheel(tmp_path, "tqdm", "4.70.1", []),
        _wheel(tmp_path, "psutil", "7.2.2", []),
        _wheel(tmp_path, "pytest", "9.2.0", []),
    ]
    installed = {"megatron-core": "0.19.2", "nemo-exaone": None, "packaging": "23.2",
                 "tqdm": "4.60.0", "psutil": None, "pytest": "7.0.0"}
    chosen, notes = gpu_install.plan(wheels, installed)
    chosen = {gpu_install.wheel_name(w)[0] for w in chosen}
    # pinned: always; packaging 23.2 fails megatron-core's >=24.2; psutil absent.
    assert chosen == {"megatron-core", "nemo-exaone", "packaging", "psutil"}, notes
    assert "install packaging==26.4 (machine's 23.2 fails packaging>=24.2)" in notes
    # tqdm: any version fits; pytest: only an extra asks for >=8, so the machine's stays.
    assert "keep    tqdm==4.60.0 (machine's; shipped 4.70.1 not needed)" in notes
    assert any(n.startswith("keep    pytest==7.0.0") for n in notes)


def test_wheel_requirements_reads_the_metadata(gpu_install, tmp_path):
    wheel = _wheel(tmp_path, "omegaconf", "2.3.1", ["antlr4-python3-runtime==4.9.*",
                                                    "PyYAML>=5.1.0"])
    assert gpu_install.wheel_name(wheel) == ("omegaconf", "2.3.1")
    assert gpu_install.wheel_requirements(wheel) == ["antlr4-python3-runtime==4.9.*",
                                                     "PyYAML>=5.1.0"]


def test_source_hash_tracks_the_package_sources(gpu_install, tmp_path):
    (tmp_path / "nemo_exaone" / "conf").mkdir(parents=True)
    (tmp_path / "pyproject.toml").write_text("[project]\n")
    (tmp_path / "nemo_exaone" / "conf" / "tiny_cpu.yaml").write_text("train: {}\n")
    before = gpu_install.source_hash(tmp_path)
    (tmp_path / "nemo_exaone" / "__pycache__").mkdir()
    (tmp_path / "nemo_exaone" / "__pycache__" / "x.cpython-312.pyc").write_bytes(b"\0")
    assert gpu_install.source_hash(tmp_path) == before  # caches do not make a wheel stale
    (tmp_path / "nemo_exaone" / "conf" / "tiny_cpu.yaml").write_text("train: {max_steps: 2}\n")
    assert gpu_install.source_hash(tmp_path) != before
