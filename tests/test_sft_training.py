"""SFT through the one training loop (``tiny_cpu_sft``, the config ``examples/sft.py`` runs):
the shipped chats, packed, loss on assistant tokens only; the loss falls, and a long-context
run (``train.seq_length`` raised) packs more conversations per sample and trains."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from nemo_exaone.commands.hydra_app import job_config, register_configs
from nemo_exaone.runtime.launch import spawn_local

ROOT = Path(__file__).resolve().parent.parent
QUICK = ["train.micro_batch_size=2", "train.global_batch_size=2", "logging.progress=none",
         "logging.tensorboard=false", "schedule.warmup_steps=1", "checkpoint.save_interval=0",
         "checkpoint.save_at_end=false", "optimizer.lr=5.0e-3"]


def compose_job(overrides: list[str]):
    GlobalHydra.instance().clear()
    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "nemo_exaone" / "conf"), version_base="1.3"):
        return job_config(compose(config_name="tiny_cpu_sft", overrides=overrides))


def _train_both(short, long) -> dict:
    from nemo_exaone.config.presets import get_preset
    from nemo_exaone.training.data_sources import build_sample_source
    from nemo_exaone.training.loop import train

    out = {"short": train(short).metrics, "long": train(long).metrics}
    for name, cfg in (("short", short), ("long", long)):
        source, summary = build_sample_source(cfg.data, cfg.train.seq_length, get_preset("tiny"),
                                              Path(cfg.run.dir), 1)
        out[f"{name}_packs"] = len(source)
        out[f"{name}_summary"] = summary
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("sft")
    common = QUICK + [f"data.prepare_dir={root / 'data'}"]
    short = compose_job(common + [f"run.dir={root / 'short'}", "train.max_steps=10",
                                  "train.seq_length=128"])
    long = compose_job(common + [f"run.dir={root / 'long'}", "train.max_steps=1",
                                 "train.seq_length=1024"])
    [out] = spawn_local(_train_both, 1, short, long)
    return out


def test_sft_loss_falls_on_the_shipped_chats(runs):
    metrics = runs["short"]
    assert len(metrics) == 10 and not any(m["skipped"] for m in metrics)
    assert metrics[0]["loss"] == pytest.approx(math.log(2048), abs=0.6)  # random start
    assert metrics[-1]["loss"] < metrics[0]["loss"] - 1.0
    # only assistant tokens count: a fraction of the 2 x 128 slots of a step
    assert all(0 < m["num_tokens"] < 0.6 * 2 * 128 for m in metrics)
    assert runs["short_summary"].source == "chat"


def test_long_context_sft_packs_more_per_sample_and_trains(runs):
    assert runs["long_packs"] * 4 <= runs["short_packs"]
    # the conversations longer than 129 tokens are skipped at 128 and all kept at 1024
    assert runs["short_summary"].skipped_documents > 0
    assert runs["long_summary"].skipped_documents == 0
    [step] = runs["long"]
    assert math.isfinite(step["loss"]) and step["num_tokens"] > 4 * 128 * 0.1
