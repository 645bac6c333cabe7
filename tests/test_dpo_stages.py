"""Multi-stage preference optimization (M0 -> M1 -> M2): each stage starts from the previous
one's final checkpoint and, for DPO, uses it as its reference, with a reference cache of its
own; an online stage trains on pairs built from the current policy's samples."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from shipped_configs import compose_job

from nemo_exaone.alignment.synthetic_task import follows_instruction


def _events(run_dir: Path, kind: str) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    return [r for r in rows if r.get("event") == kind]


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """M0 (a fresh tiny model) -> M1 (offline pairs) -> M2 (online pairs from M1), 2 steps
    each, at a learning rate that moves the weights."""
    from nemo_exaone.alignment.stages import run_preference_pipeline
    from nemo_exaone.checkpoint.mcore_checkpoint import save_mcore_checkpoint
    from nemo_exaone.config.presets import get_preset
    from nemo_exaone.model.builder import build_model_chunks
    from nemo_exaone.runtime.distributed import destroy_distributed, init_distributed

    tmp = tmp_path_factory.mktemp("stages")
    try:
        init_distributed(seed=5)
        arch = get_preset("tiny")
        save_mcore_checkpoint(build_model_chunks(arch), tmp / "m0", arch)
    finally:
        destroy_distributed()
    run = tmp / "run"
    job = compose_job("tiny_cpu_dpo_stages", [
        f"run.dir={run}", f"data.prepare_dir={tmp / 'prep'}", f"init.checkpoint={tmp / 'm0'}",
        "train.micro_batch_size=2", "train.global_batch_size=4", "optimizer.lr=1e-2",
        "optimizer.min_lr=1e-3", "schedule.warmup_steps=0", "dpo.eval_pairs=8",
        "dpo.eval_max_new_tokens=4", "logging.progress=none", "logging.tensorboard=false",
        "logging.log_interval=1", "dpo.stages.0.max_steps=2", "dpo.stages.1.max_steps=2",
        "dpo.stages.1.samples_per_prompt=2", "dpo.stages.1.temperature=2.0",
        "dpo.stages.1.max_prompts=96"])
    result = run_preference_pipeline(job)
    return tmp, run, json.loads((run / "eval.json").read_text()), result


def test_each_stage_starts_from_and_is_referenced_to_the_previous_one(chain):
    from nemo_exaone.alignment.dpo import cache_path
    from nemo_exaone.checkpoint.locate import locate_checkpoint

    tmp, run, report, _ = chain
    m1, m2 = report["stages"]
    assert (m1["name"], m2["name"]) == ("M1", "M2")
    assert m1["init"] == m1["reference"] == str(tmp / "m0")
    assert m2["init"] == m2["reference"] == str(run / "M1")
    # M2's policy is initialised with M1's final checkpoint...
    assert _events(run / "M2", "init_weights")[0]["path"] == m1["checkpoint"]
    # ... and its reference cache is keyed by that checkpoint: a new reference, a new cache.
    seq = compose_job("tiny_cpu_dpo_stages", []).train.seq_length
    tokenizer_dir = _events(run / "M2", "data")[0]["tokenizer_dir"]
    m1_ckpt = locate_checkpoint(run / "M1").path
    assert str(m1_ckpt) == m1["checkpoint"]
    assert Path(m2["reference_cache"]) == cache_path(m2["preference_file"], m1_ckpt,
                                                     tokenizer_dir, seq)
    assert m2["reference_cache"] != m1["reference_cache"]
    assert Path(m2["reference_cache"]).is_file() and Path(m1["reference_cache"]).is_file()
    # Policy == reference at each stage's first step (DPO loss log 2), and M1 did move away
    # from M0: were M2 started from M0's weights (or referenced to M0) it would not be log 2.
    log2 = math.log(2.0)
    assert _metrics(run / "M1")[0]["loss"] == pytest.approx(log2, abs=1e-5)
    assert _metrics(run / "M2")[0]["loss"] == pytest.approx(log2, abs=1e-5)
    assert abs(_metrics(run / "M1")[-1]["loss"] - log2) > 1e-4


def test_online_stage_trains_on_pairs_from_the_policy_samples(chain):
    _, run, report, _ = chain
    m1, m2 = report["stages"]
    assert m1["online"] is None and m2["online"]["kept"] > 0
    pairs = [json.loads(line) for line in Path(m2["preference_file"]).read_text().splitlines()]
    assert len(pairs) == m2["online"]["kept"]
    assert Path(m2["preference_file"]).parent == run / "M2"
    for pair in pairs:  # best and worst by the rule
        assert follows_instruction(pair["prompt"], pair["chosen_response"])
        assert not follows_instruction(pair["prompt"], pair["rejected_response"])


def test_eval_json_has_one_entry_per_model(chain):
    _, _, report, _ = chain
    assert set(report["models"]) == {"M0", "M1", "M2"}
    for key in ("preference_accuracy_before", "preference_accuracy_after",
                "behaviour_rate_before", "behaviour_rate_after"):
        assert report[key] is not None
    assert report["steps"] == 4 and report["loss_type"] == "dpo"
    # DPO's implicit reward is 0 for every pair while policy == reference.
    assert [s["preference_accuracy_before"] for s in report["stages"]] == [0.5, 0.5]


def test_the_pipeline_result_is_the_last_stage_run(chain):
    """What the command's closing line reports (step k/N, metrics path) is M2's run, not the
    job the command was given (whose max_steps and run.dir are the pipeline's)."""
    _, run, _, result = chain
    assert result.run_dir == str(run / "M2") and result.max_steps == 2
    assert result.state.step == 2 and result.last_checkpoint.startswith(str(run / "M2"))
