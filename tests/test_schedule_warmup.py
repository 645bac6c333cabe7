"""The learning rate the real loop logs follows the schedule's closed form through warmup and
into the decay.

Step k's update uses the rate after k-1 scheduler steps (the scheduler advances once per
applied update). Linear warmup from ``init_lr`` to ``lr`` over W steps, then cosine to
``min_lr`` at ``max_steps``:

    n <= W:  init_lr + (lr - init_lr) * n / W
    n >  W:  min_lr + (lr - min_lr) * (1 + cos(pi * (n - W) / (max_steps - W))) / 2
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from nemo_exaone.runtime.launch import spawn_local

ROOT = Path(__file__).resolve().parent.parent
INIT_LR, PEAK, MIN_LR, WARMUP, STEPS = 1e-4, 1e-3, 1e-5, 4, 7


def closed_form(n: int) -> float:
    if n <= WARMUP:
        return INIT_LR + (PEAK - INIT_LR) * n / WARMUP
    progress = (n - WARMUP) / (STEPS - WARMUP)
    return MIN_LR + (PEAK - MIN_LR) * 0.5 * (1 + math.cos(math.pi * progress))


def _logged_lr(cfg) -> list[tuple[int, float]]:
    import torch

    from nemo_exaone.training.loop import train

    torch.distributed.init_process_group("gloo")
    try:
        return [(m["step"], m["lr"]) for m in train(cfg).metrics]
    finally:
        torch.distributed.destroy_process_group()


def test_logged_learning_rate_follows_warmup_then_cosine(tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from nemo_exaone.commands.hydra_app import job_config, register_configs

    GlobalHydra.instance().clear()
    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "nemo_exaone" / "conf"),
                               version_base="1.3"):
        cfg = job_config(compose(config_name="tiny_cpu", overrides=[
            "data=synthetic", "schedule=cosine", f"schedule.warmup_steps={WARMUP}",
            f"schedule.init_lr={INIT_LR}", f"optimizer.lr={PEAK}", f"optimizer.min_lr={MIN_LR}",
            f"train.max_steps={STEPS}", "train.seq_length=32", "train.micro_batch_size=2",
            "train.global_batch_size=2", "logging.progress=none", "logging.tensorboard=false",
            "checkpoint.save_interval=0", "checkpoint.save_at_end=false",
            f"run.dir={tmp_path / 'run'}"]))
    [logged] = spawn_local(_logged_lr, 1, cfg)
    assert [step for step, _ in logged] == list(range(1, STEPS + 1))
    for step, lr in logged:
        assert lr == pytest.approx(closed_form(step - 1), rel=1e-9, abs=0), (step, lr)
    # the curve has the intended shape: rising, peak at the end of warmup, then falling
    assert logged[0][1] == INIT_LR and logged[WARMUP][1] == pytest.approx(PEAK)
    assert logged[-1][1] < logged[WARMUP + 1][1] < PEAK
