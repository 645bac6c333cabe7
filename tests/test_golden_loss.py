"""Golden losses: the first 20 steps of ``tiny_cpu`` match the recorded values to 1e-5.

Parity tests compare two code paths that share most of their arithmetic; a change to that
shared arithmetic (initialisation, data order, tokenizer, schedule, loss reduction) moves both
sides together and passes them. This test pins the numbers themselves, so such a change fails
CI until someone looks at it and regenerates the file on purpose:

    NEMO_EXAONE_REGENERATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_golden_loss.py

(regeneration writes the file and reports the test as skipped; commit the new file with the
reason for the change). The values were identical, bit for bit, under megatron-core 0.16.1
and 0.19.2, so one file serves both.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from nemo_exaone.runtime.launch import spawn_local

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "golden" / "tiny_cpu_losses.json"
REGENERATE = "NEMO_EXAONE_REGENERATE_GOLDEN"
CONFIG_NAME = "tiny_cpu"
STEPS = 20
TOLERANCE = 1e-5
# Only what keeps the run short and quiet: the model, data, optimizer and schedule are the
# shipped config's (the 20 steps lie inside its 20-step warmup, so max_steps does not move
# the learning rate).
OVERRIDES = [f"train.max_steps={STEPS}", "logging.log_interval=1", "logging.progress=none",
             "logging.tensorboard=false", "checkpoint.save_interval=0",
             "checkpoint.save_at_end=false"]


def _golden_run(run_dir: str, prepare_dir: str) -> dict:
    """The configured run, one intra-op thread (the same reduction order on any machine)."""
    import megatron.core
    import torch
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from nemo_exaone.commands.hydra_app import job_config, register_configs
    from nemo_exaone.training.loop import train

    torch.set_num_threads(1)
    GlobalHydra.instance().clear()
    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "nemo_exaone" / "conf"),
                               version_base="1.3"):
        cfg = job_config(compose(config_name=CONFIG_NAME, overrides=OVERRIDES + [
            f"run.dir={run_dir}", f"data.prepare_dir={prepare_dir}"]))
    metrics = train(cfg).metrics
    return {"losses": [m["loss"] for m in metrics], "lr": [m["lr"] for m in metrics],
            "megatron_core": megatron.core.__version__, "torch": torch.__version__}


def test_tiny_cpu_first_20_losses_match_the_golden_file(tmp_path):
    [run] = spawn_local(_golden_run, 1, str(tmp_path / "run"), str(tmp_path / "prepared"))
    assert len(run["losses"]) == STEPS
    if os.environ.get(REGENERATE) == "1":
        from nemo_exaone.runtime.outputs import write_text_atomic

        GOLDEN.parent.mkdir(exist_ok=True)
        record = {"config_name": CONFIG_NAME, "overrides": OVERRIDES, "tolerance": TOLERANCE,
                  "generated_with": {"megatron_core": run["megatron_core"],
                                     "torch": run["torch"]},
                  "losses": run["losses"]}
        write_text_atomic(GOLDEN, json.dumps(record, indent=1) + "\n")
        pytest.skip(f"{REGENERATE}=1: wrote {GOLDEN}; commit it with the reason")
    golden = json.loads(GOLDEN.read_text(encoding="utf-8"))
    assert golden["config_name"] == CONFIG_NAME and golden["overrides"] == OVERRIDES, \
        f"{GOLDEN} was recorded for another run: regenerate it ({REGENERATE}=1)"
    off = [(step, got, want) for step, (got, want)
           in enumerate(zip(run["losses"], golden["losses"]), start=1)
           if abs(got - want) > TOLERANCE]
    assert not off, (f"losses moved from {GOLDEN.name} (megatron-core "
                     f"{run['megatron_core']}, torch {run['torch']}); (step, got, golden): "
                     f"{off}. If the change is intended, regenerate with {REGENERATE}=1.")
    # The run really trains: the loss falls over the warmup.
    assert sum(run["losses"][-4:]) < sum(run["losses"][:4]) - 4 * 0.5
