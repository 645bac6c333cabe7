"""Exact parameter counts, read off the built Megatron model (not a formula)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

EXPECTED = {
    "exaone3.0-7.8b": 7_818_448_896,
    "exaone3.5-7.8b": 7_818_448_896,
    "exaone3.5-2.4b": 2_405_327_360,
    "exaone3.5-32b": 32_003_200_000,
}


def _info(preset: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "nemo_exaone.cli", "info", preset, "--json"],
                         capture_output=True, text=True, check=True, timeout=300)
    return json.loads(out.stdout)


def test_info_json_32b():
    info = _info("exaone3.5-32b")
    assert info["num_parameters"] == 32_003_200_000
    assert info["hf_config"]["num_layers"] == 64


_COUNT_ALL = """
import json
from nemo_exaone.config.presets import get_preset
from nemo_exaone.model.params import count_parameters
print(json.dumps({p: count_parameters(get_preset(p)) for p in %r}))
"""


@pytest.fixture(scope="module")
def counts() -> dict:
    # A subprocess: counting initialises a process group and Megatron's CPU layer, which
    # should not leak into the pytest process.
    out = subprocess.run([sys.executable, "-c", _COUNT_ALL % sorted(EXPECTED)],
                         capture_output=True, text=True, check=True, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("preset", sorted(EXPECTED))
def test_count_from_built_model(preset, counts):
    got = counts[preset]
    assert got["num_parameters"] == EXPECTED[preset]
    parts = sum(v for k, v in got.items() if k != "num_parameters")
    assert parts == got["num_parameters"]
    # Tied embeddings: 2.4B has no separate output layer.
    assert ("output_layer" in got) == (preset != "exaone3.5-2.4b")
