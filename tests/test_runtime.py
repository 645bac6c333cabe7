"""Runtime guards: Megatron-Core version policy and the CLI's clean errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from nemo_exaone.runtime.versions import TESTED_MEGATRON_CORE, check_megatron_core_version


@pytest.mark.parametrize("version", TESTED_MEGATRON_CORE)
def test_tested_versions_accepted(version):
    assert check_megatron_core_version(version) == version


def test_untested_version_refused_with_instructions(monkeypatch):
    monkeypatch.delenv("NEMO_EXAONE_ALLOW_UNTESTED_MCORE", raising=False)
    with pytest.raises(RuntimeError, match=r"megatron-core 0\.15\.0 is not a tested version.*"
                                           r"pip install megatron-core==0\.16\.1"):
        check_megatron_core_version("0.15.0")
    monkeypatch.setenv("NEMO_EXAONE_ALLOW_UNTESTED_MCORE", "1")
    assert check_megatron_core_version("0.15.0") == "0.15.0"


def test_installed_version_is_tested():
    check_megatron_core_version()


def test_cli_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "nemo_exaone.cli", "--help"],
                         capture_output=True, text=True, check=True, timeout=120)
    assert "info" in out.stdout


def test_cli_unknown_preset_is_a_clean_error():
    out = subprocess.run([sys.executable, "-m", "nemo_exaone.cli", "info", "exaone9"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "invalid choice: 'exaone9'" in out.stderr
    assert "Traceback" not in out.stderr


_PARENT_THEN_CHILD = """
import os, subprocess, sys
from nemo_exaone.runtime.distributed import init_distributed
init_distributed()  # a world of one; its store listens on MASTER_PORT while this process lives
child = ("from nemo_exaone.runtime.distributed import init_distributed; init_distributed(); "
         "import os; print(os.environ['MASTER_PORT'])")
r = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True)
print(os.environ["MASTER_PORT"], r.returncode, r.stdout.strip(), r.stderr[-2000:])
"""


def test_a_child_of_a_single_process_world_starts_its_own():
    # In one pytest process an in-process run left RANK/MASTER_PORT in os.environ; every CLI
    # run the suite launched afterwards inherited them and failed with EADDRINUSE.
    out = subprocess.run([sys.executable, "-c", _PARENT_THEN_CHILD], capture_output=True,
                         text=True, timeout=300, check=True).stdout.split(maxsplit=3)
    parent_port, child_rc, child_port = out[0], out[1], out[2]
    assert child_rc == "0", out
    assert child_port != parent_port
