"""A training checkpoint (model + optimizer + scheduler + train state) loads weights-only
through load_mcore_checkpoint, and agrees with the HF export of the same checkpoint."""

from __future__ import annotations

import subprocess
import sys

from nemo_exaone.runtime.launch import spawn_local


def _load_embedding(ckpt_dir: str) -> list:
    from nemo_exaone.checkpoint import load_mcore_checkpoint, read_checkpoint_arch
    from nemo_exaone.config.parallel import ParallelConfig
    from nemo_exaone.model.builder import build_model
    from nemo_exaone.runtime.distributed import destroy_distributed, init_distributed

    init_distributed(ParallelConfig())
    try:
        arch = read_checkpoint_arch(ckpt_dir)
        model = build_model(arch)
        load_mcore_checkpoint([model], ckpt_dir)
        return model.embedding.word_embeddings.weight.detach().tolist()
    finally:
        destroy_distributed()


def test_training_checkpoint_loads_weights_only_and_matches_hf_export(tmp_path):
    import torch
    from safetensors.torch import load_file

    run = tmp_path / "run"
    subprocess.run([sys.executable, "-m", "nemo_exaone.cli", "train", "--config-name",
                    "tiny_cpu", f"run.dir={run}", "train.max_steps=2",
                    "checkpoint.save_interval=2", "checkpoint.async_save=false",
                    f"data.prepare_dir={tmp_path / 'data'}"],
                   check=True, capture_output=True, timeout=600)
    [ckpt] = sorted((run / "checkpoints").glob("iter_*"))
    [embedding] = spawn_local(_load_embedding, 1, str(run))  # a run directory: its latest
    hf = tmp_path / "hf"
    subprocess.run([sys.executable, "-m", "nemo_exaone.cli", "convert", "mcore-to-hf",
                    "--ckpt", str(ckpt), "--out", str(hf), "--quiet"],
                   check=True, capture_output=True, timeout=600)
    tensors = {}
    for shard in hf.glob("*.safetensors"):
        tensors.update(load_file(shard))
    assert torch.equal(torch.tensor(embedding), tensors["transformer.wte.weight"].float())
