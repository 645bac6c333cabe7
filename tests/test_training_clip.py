"""Gradient clipping: ``optimizer.clip_grad`` reaches Megatron's optimizer and bounds the update.

The tiny runs' gradient norms (1-5) sit above the default clip of 1.0, so clipping changes
their training; a setting that silently stops reaching the optimizer (Megatron then clips at
its own default) would go unnoticed by every loss-is-finite check.

One step of Adam with ``adam_eps=1`` and no weight decay moves each weight by
``lr * g / (|g| + 1)``, at most ``lr * |g|`` elementwise, so the whole update has norm at most
``lr * ||g||``, and ``||g|| <= clip_grad`` when clipping works: a hard bound to test against.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nemo_exaone.runtime.launch import spawn_local

ROOT = Path(__file__).resolve().parent.parent
LR = 0.1
TIGHT = 1e-3
BATCH, SEQ = 4, 32


def _batch(vocab_size: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    seq = torch.randint(0, vocab_size, (BATCH, SEQ + 1), generator=gen)
    return {"tokens": seq[:, :-1].contiguous(), "labels": seq[:, 1:].contiguous(),
            "loss_mask": torch.ones(BATCH, SEQ),
            "position_ids": torch.arange(SEQ).unsqueeze(0).expand(BATCH, -1).contiguous()}


def _one_update(clip_grad: float) -> dict:
    """Norm of the parameter change of one real optimizer step on the tiny model."""
    from nemo_exaone.config.parallel import ParallelConfig, PrecisionConfig
    from nemo_exaone.config.presets import get_preset
    from nemo_exaone.model.builder import ModelOptions, build_model_chunks
    from nemo_exaone.runtime.distributed import destroy_distributed, init_distributed
    from nemo_exaone.training.iteration import run_iteration
    from nemo_exaone.training.objectives import LanguageModelObjective
    from nemo_exaone.training.optimizer import OptimizerSettings, build_optimizer, wrap_ddp

    arch, parallel = get_preset("tiny"), ParallelConfig()
    init_distributed(parallel, seed=1234)  # same seed: the same initial weights every call
    try:
        options = ModelOptions(extra_config={"calculate_per_token_loss": True})
        chunks = wrap_ddp(build_model_chunks(arch, parallel, PrecisionConfig(), options),
                          parallel)
        settings = OptimizerSettings(lr=LR, min_lr=0.0, weight_decay=0.0, adam_eps=1.0,
                                     clip_grad=clip_grad)
        optimizer = build_optimizer(chunks, settings, parallel, PrecisionConfig())
        before = [p.detach().clone() for p in chunks[0].parameters()]
        objective = LanguageModelObjective()
        result = run_iteration(chunks, optimizer, [_batch(arch.vocab_size)], BATCH, SEQ,
                               objective.forward_step, objective.loss_key)
        change = torch.sqrt(sum(((p.detach() - b) ** 2).sum()
                                for p, b in zip(chunks[0].parameters(), before)))
        return {"applied": result.applied, "grad_norm": result.grad_norm,
                "update_norm": float(change),
                "configured": [o.config.clip_grad for o in optimizer.chained_optimizers]}
    finally:
        destroy_distributed()


def _both(clips: list[float]) -> list[dict]:
    return [_one_update(c) for c in clips]


@pytest.fixture(scope="module")
def updates() -> dict:
    [(tight, off)] = spawn_local(_both, 1, [TIGHT, 0.0])
    return {"tight": tight, "off": off}


def test_clip_setting_reaches_megatron_optimizer(updates):
    assert updates["tight"]["configured"] == [TIGHT]
    assert updates["off"]["configured"] == [0.0]


def test_clip_bounds_one_real_update(updates):
    tight, off = updates["tight"], updates["off"]
    assert tight["applied"] and off["applied"]
    # The logged norm is the one before clipping: the same gradients in both runs.
    assert tight["grad_norm"] == pytest.approx(off["grad_norm"], rel=1e-6)
    assert tight["grad_norm"] > 100 * TIGHT  # so clipping has work to do
    # Clipped: the update is bounded by lr * clip (and nearly reaches it: |g| << eps). The
    # margin covers fp32 rounding of weights ~0.02 moved by ~1e-7 each.
    assert tight["update_norm"] <= LR * TIGHT * 1.01
    assert tight["update_norm"] > 0.9 * LR * TIGHT
    # Unclipped: the same step moves the weights by about lr * ||g||.
    assert off["update_norm"] == pytest.approx(LR * off["grad_norm"], rel=0.05)


def _loop_losses(configs: list) -> list[list[float]]:
    import torch

    from nemo_exaone.training.loop import train

    torch.distributed.init_process_group("gloo")
    try:
        return [[m["loss"] for m in train(cfg).metrics] for cfg in configs]
    finally:
        torch.distributed.destroy_process_group()


def test_clip_grad_from_the_job_config_reaches_the_loop(tmp_path):
    """Through the real loop: clipping at 1e-12 freezes the model (Adam's eps dwarfs the
    clipped gradients), so its losses equal those of a run with lr=0 on the same batches;
    a clip setting lost on the way (Megatron's default 1.0) would train visibly."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from nemo_exaone.commands.hydra_app import job_config, register_configs
    common = ["data=synthetic", "train.max_steps=3", "train.seq_length=32",
              "train.micro_batch_size=4", "train.global_batch_size=8",
              "schedule.warmup_steps=0", "logging.progress=none", "logging.tensorboard=false",
              "checkpoint.save_interval=0", "checkpoint.save_at_end=false"]

    def job(name: str, *overrides: str):
        GlobalHydra.instance().clear()
        register_configs()
        with initialize_config_dir(config_dir=str(ROOT / "nemo_exaone" / "conf"),
                                   version_base="1.3"):
            return job_config(compose(config_name="tiny_cpu", overrides=common + [
                f"run.dir={tmp_path / name}", *overrides]))

    clipped, frozen, trained = spawn_local(_loop_losses, 1, [
        job("clipped", "optimizer.clip_grad=1e-12"),
        job("frozen", "optimizer.lr=0", "optimizer.min_lr=0"),
        job("trained", "optimizer.clip_grad=1.0")])[0]
    assert clipped == pytest.approx(frozen, abs=1e-4)
    assert abs(trained[-1] - frozen[-1]) > 1e-3  # a clip of 1.0 trains visibly
