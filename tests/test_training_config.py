"""Hydra configs against the dataclass schema, LR schedules, and the FLOPs formula."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import ConfigCompositionException

from nemo_exaone.commands.hydra_app import job_config, register_configs
from nemo_exaone.config.presets import get_preset
from nemo_exaone.training.config import ScheduleConfig, TrainingJobConfig, resolve_arch
from nemo_exaone.training.flops import flops_per_token
from nemo_exaone.training.optimizer import OptimizerSettings

CONF = Path(__file__).resolve().parent.parent / "nemo_exaone" / "conf"
PRIMARY = ["pretrain", "tiny_cpu", "tiny_cpu_continued", "tiny_cpu_anneal", "tiny_cpu_distill"]


def _compose(name: str, overrides: list[str] | None = None):
    GlobalHydra.instance().clear()
    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name=name, overrides=overrides or [])


@pytest.mark.parametrize("name", PRIMARY)
def test_every_primary_config_composes_into_the_dataclasses(name):
    job = job_config(_compose(name, ["init.checkpoint=/x"] if name == "pretrain" else []))
    assert isinstance(job, TrainingJobConfig)
    job.model.build_arch()


def test_stage_chain_of_the_tiny_configs():
    cont = job_config(_compose("tiny_cpu_continued"))
    assert cont.init.checkpoint == "runs/tiny_cpu" and cont.init.load == "weights"
    assert cont.data.documents == "whole" and cont.data.replay_fraction > 0
    assert cont.train.seq_length == 2 * job_config(_compose("tiny_cpu")).train.seq_length
    assert cont.model.build_arch().rope_theta == 2.0e6
    anneal = job_config(_compose("tiny_cpu_anneal"))
    assert anneal.optimizer.min_lr == 0.0 and anneal.schedule.style == "linear"
    assert anneal.init.checkpoint == "runs/tiny_cpu_continued"
    distill = job_config(_compose("tiny_cpu_distill"))
    assert distill.stage.objective == "distill"
    assert distill.model.build_arch().num_layers < get_preset("tiny").num_layers


def test_unknown_fields_are_named(tmp_path):
    with pytest.raises(ConfigCompositionException) as info:
        _compose("tiny_cpu", ["train.max_stepz=3"])
    assert "full_key: train.max_stepz" in str(info.value.__cause__)
    (tmp_path / "bad.yaml").write_text("defaults:\n  - job_schema\n  - _self_\n"
                                       "train:\n  bogus: 1\n")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(tmp_path), version_base="1.3"):
        with pytest.raises(ConfigCompositionException, match="full_key: train.bogus"):
            compose(config_name="bad")
    with pytest.raises(ValueError, match="precision.dtype='fp9'"):
        job_config(_compose("tiny_cpu", ["precision.dtype=fp9"]))
    with pytest.raises(ValueError, match="model.arch.num_layerz"):
        resolve_arch("tiny", {"num_layerz": 2}, "model.arch")
    with pytest.raises(ValueError, match="schedule.style='cosin'"):
        from nemo_exaone.training.config import validate_job

        validate_job(job_config(_compose("tiny_cpu", ["schedule.style=cosin"])))


def test_rope_scaling_can_be_removed_or_changed():
    assert resolve_arch("tiny", {"rope_scaling": False}, "m").rope_scaling is None
    arch = resolve_arch("tiny", {"rope_scaling": {"factor": 16.0}}, "m")
    assert arch.rope_scaling["factor"] == 16.0 and arch.rope_scaling["rope_type"] == "llama3"


class _Groups:
    """The scheduler only needs ``param_groups``: a stand-in for a Megatron optimizer."""

    def __init__(self) -> None:
        self.param_groups = [{"lr": 0.0}]


def _lrs(schedule: ScheduleConfig, steps: int) -> list[float]:
    from nemo_exaone.training.schedule import build_scheduler

    opt = _Groups()
    sched = build_scheduler(opt, schedule, OptimizerSettings(lr=1.0, min_lr=0.1), steps)
    out = []
    for _ in range(steps + 1):
        out.append(opt.param_groups[0]["lr"])
        sched.step(1)
    return out


def test_learning_rate_schedules():
    cos = _lrs(ScheduleConfig(style="cosine", warmup_steps=4), 20)
    assert cos[:5] == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])
    assert cos[12] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert cos[20] == pytest.approx(0.1)
    wsd = _lrs(ScheduleConfig(style="wsd", warmup_steps=2, wsd_decay_steps=5), 20)
    assert wsd[2:16] == pytest.approx([1.0] * 14)
    assert wsd[20] == pytest.approx(0.1) and wsd[16] < 1.0
    const = _lrs(ScheduleConfig(style="constant", warmup_steps=2), 10)
    assert const[2:] == pytest.approx([1.0] * 9)
    lin = _lrs(ScheduleConfig(style="linear"), 10)
    assert lin == pytest.approx([1.0 - 0.09 * i for i in range(11)])


@pytest.mark.parametrize("preset", ["exaone3.5-2.4b", "exaone3.5-7.8b", "tiny"])
def test_flops_count_every_matmul_weight_twice(preset):
    """Matmul FLOPs per token = 2 x (weights of every linear layer, incl. the LM head)."""
    arch = get_preset(preset)
    f = flops_per_token(arch, seq_length=4096)
    h, d = arch.hidden_size, arch.head_dim
    qkvo = h * d * (2 * arch.num_attention_heads + 2 * arch.num_key_value_heads)
    mlp = 3 * h * arch.intermediate_size
    linear_weights = arch.num_layers * (qkvo + mlp) + h * arch.vocab_size
    assert f.attention_projections + f.mlp + f.lm_head == 2 * linear_weights
    # causal attention: QK^T and PV over (s+1)/2 keys on average
    assert f.attention_scores == arch.num_layers * 4 * (4097 / 2) * arch.num_attention_heads * d
    assert f.training == 3 * f.forward


def test_cli_train_composes_the_same_configs(capsys):
    from nemo_exaone.cli import main

    assert main(["train", "--config-name", "tiny_cpu_anneal", "--cfg",
                 "train.max_steps=7"]) == 0
    out = capsys.readouterr().out
    assert "max_steps: 7" in out and "objective: lm" in out and "name: anneal" in out
    assert main(["train", "--config-name", "tiny_cpu", "--cfg", "train.max_stepz=1"]) == 2
    assert "full_key: train.max_stepz" in capsys.readouterr().err
