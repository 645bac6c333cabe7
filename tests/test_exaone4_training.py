"""EXAONE 4.0 through the training loop: ``tiny4_cpu`` (hybrid sliding-window/global layers,
window 16 < the 128-token sequences) trains, its checkpoint exports as an
``Exaone4ForCausalLM`` directory, and transformers loads it with every weight."""

from __future__ import annotations

import json
import subprocess
import sys

import torch
from shipped_configs import compose_job

from nemo_exaone.runtime.launch import spawn_local

STEPS = 16


def _train(run_dir: str, prepare_dir: str) -> list[float]:
    from nemo_exaone.training.loop import train

    cfg = compose_job("tiny4_cpu", [
        f"train.max_steps={STEPS}", "logging.log_interval=1", "logging.progress=none",
        "logging.tensorboard=false", "checkpoint.save_interval=0",
        "checkpoint.save_at_end=true", f"run.dir={run_dir}", f"data.prepare_dir={prepare_dir}"])
    assert cfg.model.preset == "tiny4"
    return [m["loss"] for m in train(cfg).metrics]


def test_tiny4_trains_and_exports_to_transformers(tmp_path):
    run = tmp_path / "run"
    [losses] = spawn_local(_train, 1, str(run), str(tmp_path / "prepared"))
    assert len(losses) == STEPS
    print("tiny4 losses:", [round(x, 3) for x in losses])
    assert sum(losses[-4:]) < sum(losses[:4]) - 4 * 0.5  # the loss falls

    hf = tmp_path / "hf"
    subprocess.run([sys.executable, "-m", "nemo_exaone.cli", "convert", "mcore-to-hf",
                    "--ckpt", str(run), "--out", str(hf), "--quiet"],
                   check=True, capture_output=True, timeout=600)
    config = json.loads((hf / "config.json").read_text())
    assert config["architectures"] == ["Exaone4ForCausalLM"]
    assert config["model_type"] == "exaone4" and config["sliding_window"] == 16
    from transformers import Exaone4ForCausalLM

    model, info = Exaone4ForCausalLM.from_pretrained(hf, dtype=torch.float32,
                                                     output_loading_info=True)
    assert not any(info.values()), info  # no missing, unexpected or mismatched weights
    # Trained post-norm weights arrived (they start at exactly 1).
    norm = model.model.layers[0].post_attention_layernorm.weight
    assert not torch.equal(norm, torch.ones_like(norm))


# ----------------------------------------------------------------------------- parallel
# 8 layers "LLLG" x 2: at PP=2 each stage holds sliding and global layers; sequences of 64
# tokens > the window of 16. Training steps exercise the gradient reductions that logits do
# not: QK-norm weights summed over TP (Megatron's finalize_model_grads), post-norm weights
# summed over TP under sequence parallelism.
_LLLG2 = ("sliding_attention",) * 3 + ("full_attention",)


def _parity_config(parallel=None):
    from nemo_exaone.config.parallel import ParallelConfig
    from nemo_exaone.training.parity import ParityConfig

    return ParityConfig(preset="tiny4", parallel=parallel or ParallelConfig(), steps=3,
                        seq_length=64,
                        arch_overrides={"num_layers": 8, "layer_types": _LLLG2 * 2})


def _parity_losses(parallel) -> list[float]:
    from nemo_exaone.training.parity import run_parity_training

    return [m["loss"] for m in run_parity_training(_parity_config(parallel))]


def test_tiny4_tp2_sp_and_pp2_train_like_tp1():
    import pytest

    from nemo_exaone.config.parallel import ParallelConfig

    [reference] = spawn_local(_parity_losses, 1, ParallelConfig())
    assert reference[-1] < reference[0]
    for parallel in (ParallelConfig(tensor_model_parallel_size=2, sequence_parallel=True),
                     ParallelConfig(pipeline_model_parallel_size=2)):
        for rank, losses in enumerate(spawn_local(_parity_losses, 2, parallel)):
            if losses:  # PP: only the last stage reports losses
                print(parallel, rank, losses, reference)
                assert losses == pytest.approx(reference, rel=1e-5), (parallel, rank)
