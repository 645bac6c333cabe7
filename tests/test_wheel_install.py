"""The package as a user installs it: build the wheel, install it (non-editable) into a fresh
virtual environment, and train two steps from an unrelated directory with the configs and the
corpus that ship inside the wheel (no --config-dir, no source tree)."""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["train.max_steps=2", "train.seq_length=64", "train.micro_batch_size=4",
         "train.global_batch_size=8", "logging.log_interval=1", "logging.progress=none",
         "logging.tensorboard=false", "schedule.warmup_steps=1"]


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "PYTHONSTARTUP")}
    env["PYTHONNOUSERSITE"] = "1"
    return env


def _run(cmd: list, cwd: Path, timeout: int = 240) -> subprocess.CompletedProcess:
    result = subprocess.run([str(c) for c in cmd], cwd=cwd, env=_clean_env(), text=True,
                            capture_output=True, timeout=timeout)
    assert result.returncode == 0, (f"{' '.join(map(str, cmd))} exited {result.returncode}:\n"
                                    f"{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv holding only the wheel; torch and megatron-core come from this test
    environment's site-packages through a plain path file. (``--system-site-packages`` alone
    would not do: run from a venv's interpreter it exposes the base Python's site-packages,
    not the venv's.)"""
    base = tmp_path_factory.mktemp("wheel")
    # Build from a copy so no build/ or *.egg-info lands in the source tree.
    src = base / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "nemo_exaone", src / "nemo_exaone",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
          "--no-index", "-w", base / "dist", src], cwd=base)
    [wheel] = (base / "dist").glob("nemo_exaone-*.whl")
    venv = base / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=base)
    python = venv / "bin" / "python"
    purelib = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                        cwd=base).stdout.strip())
    # Plain path lines: the test environment's .pth files (an editable install of this source
    # tree among them) are not processed, so nemo_exaone can only come from the wheel.
    ours = [sysconfig.get_path("purelib"), sysconfig.get_path("platlib"), *site.getsitepackages()]
    (purelib / "test_env_packages.pth").write_text("\n".join(dict.fromkeys(ours)) + "\n")
    _run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps",
          "--no-index", wheel], cwd=base)
    return venv


@pytest.mark.slow
def test_installed_wheel_trains_two_steps_from_another_directory(installed, tmp_path):
    work = tmp_path / "elsewhere"
    work.mkdir()
    where = _run([installed / "bin" / "python", "-c",
                  "import nemo_exaone, nemo_exaone.conf as c; print(nemo_exaone.__file__); "
                  "print(c.__file__)"], cwd=work).stdout.split()
    for path in where:
        assert Path(path).is_relative_to(installed), f"imported from {path}, not the wheel"
    assert not Path(where[0]).is_relative_to(ROOT)
    _run([installed / "bin" / "nemo-exaone", "train", "--config-name", "tiny_cpu", *QUICK],
         cwd=work)
    run_dir = work / "runs" / "tiny_cpu"  # the shipped config's relative run.dir, under cwd
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
               if line.strip()]
    steps = [m["step"] for m in metrics if "loss" in m]
    assert steps == [1, 2], metrics
    checkpoint = run_dir / "checkpoints" / "iter_0000002"
    assert checkpoint.is_dir() and any(checkpoint.glob("*.distcp")), list(checkpoint.iterdir())
    assert (run_dir / "checkpoints" / "latest").read_text().strip().endswith("2")
