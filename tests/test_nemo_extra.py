"""Without NeMo 2 (the main leg): the NeMo pieces fail with an error naming the extra, the NeMo
tests are not collected, and megatron-core 0.15.x is admitted only once NeMo asked for it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from nemo_exaone.runtime import versions
from nemo_exaone.runtime.nemo_compat import nemo_available

without_nemo = pytest.mark.skipif(nemo_available(), reason="NeMo 2 is installed here")


@without_nemo
def test_import_names_the_extra():
    out = subprocess.run([sys.executable, "-c", "import nemo_exaone.nemo"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode != 0
    assert "pip install 'nemo-exaone[nemo]'" in out.stderr and "ImportError" in out.stderr


@without_nemo
def test_cli_names_the_extra(tmp_path, capsys):
    from nemo_exaone.cli import main

    code = main(["convert", "hf-to-nemo", "--hf", str(tmp_path), "--out", str(tmp_path / "o")])
    assert code == 2
    assert "nemo-exaone[nemo]" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@without_nemo
def test_nemo_tests_are_not_collected_here():
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "--collect-only", "tests/nemo"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 5, out.stdout[-2000:]  # no tests collected, no import error


def test_megatron_core_0_15_only_after_nemo_asks(monkeypatch):
    monkeypatch.setitem(versions._NEMO_LINE, "allowed", False)
    monkeypatch.delenv("NEMO_EXAONE_ALLOW_UNTESTED_MCORE", raising=False)
    with pytest.raises(RuntimeError, match="0.15.3 is not a tested version"):
        versions.check_megatron_core_version("0.15.3")
    versions.allow_nemo_megatron_core()
    assert versions.check_megatron_core_version("0.15.3") == "0.15.3"
    with pytest.raises(RuntimeError, match="0.14.0 is not a tested version"):
        versions.check_megatron_core_version("0.14.0")
