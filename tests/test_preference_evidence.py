"""Evidence that preference optimization works, on the rule-checkable instruction task.

The task itself (chosen follows the instruction, rejected breaks it, opposite variants
balanced, held-out topics unseen), the held-out metrics against closed forms, and a small
version of the evidence run: DPO and SimPO on the one loop raise held-out preference
accuracy well above the ~50% of the starting model (thresholds measured with margin; a
broken loss, e.g. its sign flipped, fails them).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import pytest
import torch
from shipped_configs import compose_job

from nemo_exaone.alignment import synthetic_task as task
from nemo_exaone.alignment.evidence import (
    implicit_rewards,
    logprob_accuracy,
    preference_accuracy,
)
from nemo_exaone.alignment.losses import PreferenceLossConfig


# ------------------------------------------------------------------ the task
def test_chosen_follows_and_rejected_breaks_the_instruction():
    for split in ("train", "heldout"):
        records = task.preference_records(split)
        assert len(records) == len(task.prompts(split))
        for r in records:
            instruction = task.instruction_of(r["prompt"])
            assert instruction == task.Instruction(r["rule"], r["arg"])
            assert task.follows(instruction, r["chosen_response"]), r
            assert not task.follows(instruction, r["rejected_response"]), r


def test_rule_examples():
    upper, lower = task.Instruction("case", "upper"), task.Instruction("case", "lower")
    assert task.follows(upper, "THE SUN IS OLD.") and not task.follows(upper, "The sun.")
    assert task.follows(lower, "the sun.") and not task.follows(lower, "the Sun.")
    assert not task.follows(upper, "...")  # no words at all
    end = task.Instruction("ending", "again")
    assert task.follows(end, "the sun is old again.") and not task.follows(end, "again no.")
    three = task.Instruction("length", "3")
    assert task.follows(three, "the sun old.") and not task.follows(three, "the sun.")
    assert task.instruction_of("Describe the sun.") is None
    assert not task.follows_instruction("Describe the sun.", "the sun.")


def test_variants_balanced_and_heldout_prompts_unseen():
    train = task.preference_records("train")
    heldout = task.preference_records("heldout", limit=96)
    # Opposite variants in equal numbers: ignoring the instruction gives ~50%.
    counts = Counter((r["rule"], r["arg"]) for r in train)
    assert len(set(counts.values())) == 1 and len(counts) == len(task.INSTRUCTIONS)
    seen = {r["prompt"] for r in train} | {
        m["content"] for c in task.sft_records() for m in c["messages"] if m["role"] == "user"}
    assert not seen & {r["prompt"] for r in heldout}
    assert not set(task.TRAIN_TOPICS) & set(task.HELDOUT_TOPICS)
    assert not set(task.QUESTIONS) & set(task.HELDOUT_QUESTIONS)
    assert not any(topic in r["prompt"] for r in train for topic in task.HELDOUT_TOPICS)
    assert len({r["rule"] for r in heldout}) == 3


def test_pairs_come_in_mirror_image_blocks():
    """Every 8 records: one prompt with every instruction; opposite variants swap chosen and
    rejected, so no instruction-blind habit wins a block."""
    records = task.preference_records("train")
    per_block = len(task.INSTRUCTIONS)
    for start in range(0, len(records), per_block):
        block = records[start:start + per_block]
        questions = {r["prompt"].removesuffix(task.Instruction(r["rule"], r["arg"]).text)
                     for r in block}
        assert len(questions) == 1
        assert {(r["rule"], r["arg"]) for r in block} == {
            (i.rule, i.arg) for i in task.INSTRUCTIONS}
        pairs = {(r["chosen_response"], r["rejected_response"]) for r in block}
        assert all((rejected, chosen) in pairs for chosen, rejected in pairs), block
    assert records[0]["prompt"] != task.preference_records("train", seed=1)[0]["prompt"]


def test_sft_answers_comply_at_the_set_rate():
    def rate(records):
        user_assistant = [(c["messages"][0]["content"], c["messages"][1]["content"])
                          for c in records]
        return sum(task.follows_instruction(p, a) for p, a in user_assistant) / len(records)

    assert rate(task.sft_records(compliance=0.5)) == pytest.approx(0.5, abs=0.05)
    assert rate(task.sft_records(compliance=1.0)) == 1.0
    assert rate(task.sft_records(compliance=0.0)) == 0.0


def test_task_files_are_deterministic_and_kept(tmp_path):
    first = task.write_task(tmp_path, heldout_pairs=8)
    stamp = first.train.stat().st_mtime_ns
    again = task.write_task(tmp_path, heldout_pairs=8)
    assert again == first and first.train.stat().st_mtime_ns == stamp
    assert len(first.heldout.read_text().splitlines()) == 8
    other = task.write_task(tmp_path, seed=1, heldout_pairs=8)
    assert other.train != first.train
    assert other.train.read_text() != first.train.read_text()


# ------------------------------------------------------------------ metrics
def _sums(values):
    return torch.tensor(values, dtype=torch.float64)


def test_accuracy_against_closed_forms():
    # pair x (chosen, rejected) x (log-prob sum, tokens)
    policy = _sums([[[-2.0, 2], [-6.0, 3]], [[-9.0, 3], [-4.0, 4]], [[-3.0, 1], [-3.0, 1]]])
    ref = _sums([[[-3.0, 2], [-5.0, 3]], [[-8.0, 3], [-5.0, 4]], [[-3.0, 1], [-3.0, 1]]])
    dpo = PreferenceLossConfig(loss="dpo", beta=0.5)
    # rewards: pair 0 (0.5, -0.5) win; pair 1 (-0.5, 0.5) loss; pair 2 (0, 0) tie
    assert implicit_rewards(dpo, policy, ref).tolist() == [[0.5, -0.5], [-0.5, 0.5], [0, 0]]
    assert preference_accuracy(dpo, policy, ref) == pytest.approx(1.5 / 3)
    assert preference_accuracy(dpo, policy, policy) == 0.5  # policy = reference
    avg = PreferenceLossConfig(loss="dpo", beta=1.0, average_log_probs=True)
    assert implicit_rewards(avg, policy, ref)[0].tolist() == pytest.approx([0.5, -1 / 3])
    simpo = PreferenceLossConfig(loss="simpo", beta=2.0)
    # mean log-probs: (-1, -2), (-3, -1), (-3, -3)
    assert implicit_rewards(simpo, policy, None).tolist() == [[-2, -4], [-6, -2], [-6, -6]]
    assert preference_accuracy(simpo, policy, None) == pytest.approx(1.5 / 3)
    assert logprob_accuracy(policy) == pytest.approx(1.5 / 3)
    with pytest.raises(ValueError, match="against a reference"):
        implicit_rewards(dpo, policy, None)


def test_simpo_takes_its_own_beta():
    """SimPO's beta (a reward scale, ~2) is dpo.simpo_beta when set; DPO keeps its KL
    coefficient; without simpo_beta SimPO falls back to ref_policy_kl_penalty."""
    from nemo_exaone.alignment.dpo import loss_config
    from nemo_exaone.training.config import DPOConfig

    assert loss_config(DPOConfig(preference_loss="simpo", simpo_beta=2.0)).beta == 2.0
    assert loss_config(DPOConfig(preference_loss="dpo", simpo_beta=2.0)).beta == 0.1
    assert loss_config(DPOConfig(preference_loss="simpo")).beta == 0.1
    recipe = compose_job("tiny_cpu_dpo_evidence", ["dpo.preference_loss=simpo"])
    assert loss_config(recipe.dpo).beta == 2.0 and recipe.dpo.simpo_gamma == 1.0
    assert recipe.dpo.sft_steps == 3000


def test_bad_loss_settings_are_refused_before_any_training(tmp_path):
    """A bad loss setting (of the job or of any stage) is a ConfigError naming the dpo field,
    raised before the minutes-long SFT run that makes M0 starts."""
    from nemo_exaone.alignment.dpo import loss_config
    from nemo_exaone.alignment.stages import run_preference_pipeline
    from nemo_exaone.config.errors import ConfigError
    from nemo_exaone.training.config import DPOConfig

    with pytest.raises(ConfigError, match=r"dpo.simpo_beta=-1.0"):
        loss_config(DPOConfig(preference_loss="simpo", simpo_beta=-1.0))
    with pytest.raises(ConfigError, match="unknown; valid losses: dpo, ipo"):
        loss_config(DPOConfig(preference_loss="simpo2"))
    for bad in (["dpo.preference_loss=simpo", "dpo.simpo_beta=0"],
                ["+dpo.stages=[{name: M1}, {name: M2, preference_loss: dpo_typo}]"]):
        job = compose_job("tiny_cpu_dpo_evidence", [f"run.dir={tmp_path / 'run'}",
                                                    f"data.prepare_dir={tmp_path / 'prep'}",
                                                    *bad])
        with pytest.raises(ConfigError):
            run_preference_pipeline(job)
        assert not (tmp_path / "run").exists() and not (tmp_path / "prep").exists()


# ------------------------------------------------------------------ the evidence, small


@pytest.fixture(scope="module")
def m0(tmp_path_factory):
    """A small M0: a short SFT run on the task's chats (answers comply half the time)."""
    from nemo_exaone.alignment.stages import prepare_task, sft_job
    from nemo_exaone.training.loop import train

    tmp = tmp_path_factory.mktemp("evidence")
    job, files = prepare_task(compose_job("tiny_cpu_dpo_evidence", _quick(tmp, "m0")))
    train(sft_job(job, files.sft))
    return tmp, tmp / "m0" / "sft"


def _quick(tmp: Path, name: str, *extra: str) -> list[str]:
    return [f"run.dir={tmp / name}", f"data.prepare_dir={tmp / 'prep'}",
            "dpo.sft_steps=SFT_STEPS".replace("SFT_STEPS", str(SFT_STEPS)),
            f"dpo.eval_pairs={EVAL_PAIRS}", "dpo.eval_max_new_tokens=0",
            "logging.progress=none", "logging.tensorboard=false", *extra]


SFT_STEPS = 40
EVAL_PAIRS = 48
DPO_STEPS = 40


def _evidence(tmp: Path, m0: Path, name: str, *extra: str) -> dict:
    from nemo_exaone.alignment.stages import run_preference_pipeline

    job = compose_job("tiny_cpu_dpo_evidence", _quick(
        tmp, name, f"init.checkpoint={m0}", f"train.max_steps={DPO_STEPS}", *extra))
    run_preference_pipeline(job)
    return json.loads((tmp / name / "eval.json").read_text())


# Measured (2026-12-01, this machine, 48 held-out pairs): DPO 0.500 -> 0.833, SimPO
# 0.500 -> 0.750 after 40 steps from a 40-step SFT M0; the thresholds leave ~0.1 of margin.
# With the SimPO loss's sign flipped (an in-process patch) the same run ends below them.
@pytest.mark.parametrize("loss,extra,threshold", [
    ("dpo", ["optimizer.lr=2e-3"], 0.70),
    ("simpo", ["optimizer.lr=2e-3"], 0.65),
])
def test_preference_optimization_raises_heldout_accuracy(m0, loss, extra, threshold):
    tmp, m0_dir = m0
    report = _evidence(tmp, m0_dir, loss, f"dpo.preference_loss={loss}", *extra)
    assert report["loss_type"] == loss and report["steps"] == DPO_STEPS
    before, after = report["preference_accuracy_before"], report["preference_accuracy_after"]
    # M0 does not prefer the instructed answer: DPO's reward is 0 for both (0.5 exactly),
    # SimPO's length-normalised log-prob is near chance.
    assert abs(before - 0.5) <= 0.2, report
    assert after >= threshold, report
    stage = report["stages"][0]
    assert stage["logprob_accuracy_before"] <= 0.7, report
    assert math.isfinite(stage["logprob_accuracy_after"])
