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


def _count_with_te_claimed(preset: str) -> dict:
    """count_parameters while the machine claims CUDA + Transformer Engine (absent here):
    record the spec the builder was asked for and where every parameter was allocated."""
    import resource

    from nemo_exaone.config.presets import get_preset
    from nemo_exaone.model import builder, params, spec
    from nemo_exaone.runtime import features

    features.transformer_engine_available.cache_clear()
    features.transformer_engine_available = lambda: True
    spec.transformer_engine_available = lambda: True
    seen = []
    real_build = builder.build_model

    def build_model(arch, parallel=None, precision=None, options=None, **kwargs):
        model = real_build(arch, parallel, precision, options, **kwargs)
        seen.append({"spec": options.spec if options else None,
                     "spec_default": spec.default_spec_name(),
                     "devices": sorted({str(p.device) for p in model.parameters()})})
        return model

    builder.build_model = build_model
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    counts = params.count_parameters(get_preset(preset))
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    return {"counts": counts, "builds": seen, "rss_growth_mib": grown_mib}


def test_count_never_allocates_even_with_te():
    """With Transformer Engine present, CPU initialisation makes TE modules allocate on an
    explicit CPU device outside the meta context (32B would need 128 GB): the count must ask
    for the local spec whatever the machine offers, and allocate nothing."""
    from nemo_exaone.runtime.launch import spawn_local

    got = spawn_local(_count_with_te_claimed, 1, "exaone3.5-32b")[0]
    (build,) = got["builds"]
    assert build["spec_default"] == "te"  # the stand-in machine does claim TE
    assert build["spec"] == "local"
    assert build["devices"] == ["meta"]
    assert got["counts"]["num_parameters"] == EXPECTED["exaone3.5-32b"]
    assert got["rss_growth_mib"] < 1024, got["rss_growth_mib"]
