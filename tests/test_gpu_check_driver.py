"""The device check's driver (scripts/gpu_check.py) stays runnable between GPU loans: every
phase body runs here on the CPU in rehearsal mode (bf16 on the CPU against fp32), in one
child process, and its comparisons pass with the stated tolerances; the Markdown table for
benchmarks/RESULTS.md renders from the results."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from nemo_exaone.runtime.launch import spawn_local

ROOT = Path(__file__).resolve().parents[1]


def _load_driver():
    spec = importlib.util.spec_from_file_location("gpu_check_driver",
                                                  ROOT / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_phases(workdir: str) -> dict:
    driver = _load_driver()
    args = driver.parse_args(["--cpu-rehearsal", "--train-steps", "2"])
    args.workdir = workdir
    results = {name: driver.PHASES[name](args) for name in
               ("env", "forward-ref", "forward", "train-ref", "train", "mfu")}
    report = {"mode": "cpu-rehearsal", "started": "2026-01-01T00:00:00",
              "phases": [{"phase": name, "status": "passed" if r["passed"] else "failed",
                          "seconds": 1.0, "result": r} for name, r in results.items()]}
    results["markdown"] = driver.markdown(report)
    return results


@pytest.mark.slow
def test_every_phase_runs_and_compares_on_cpu(tmp_path):
    [r] = spawn_local(_run_phases, 1, str(tmp_path))
    assert r["env"]["megatron_core"] and r["env"]["transformer_engine_available"] is False
    forward = r["forward"]
    assert forward["passed"], forward
    assert forward["params_on"] == ["cpu"] and forward["logp_std"] > 0.2
    assert 0 < forward["max_abs_diff"] <= forward["tolerance"]["max_abs_diff"]
    train = r["train"]
    assert train["passed"] and len(train["losses"]) == 2, train
    assert train["reference_losses"] == r["train-ref"]["losses"]
    assert 0 < train["max_abs_diff"] <= train["tolerance"]
    [row] = r["mfu"]["rows"]
    assert row["precision"] == "bf16" and row["tokens_per_s"] > 0 and r["mfu"]["spec"] == "local"
    assert "| forward | passed |" in r["markdown"] and "max abs d loss" in r["markdown"]
