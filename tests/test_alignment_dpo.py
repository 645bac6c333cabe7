"""DPO on the one loop: reference log-probs from the on-disk cache and recomputed on the fly
give the same losses; the cache is written next to the data and reused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nemo_exaone.alignment.preference_data import toy_preference_records

ROOT = Path(__file__).resolve().parents[1]


def compose_job(name: str, overrides: list[str]):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from nemo_exaone.commands.hydra_app import job_config, register_configs

    GlobalHydra.instance().clear()
    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "nemo_exaone" / "conf"), version_base="1.3"):
        return job_config(compose(config_name=name, overrides=overrides))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A reference checkpoint (a freshly initialised tiny model) and 16 toy pairs."""
    from nemo_exaone.checkpoint.mcore_checkpoint import save_mcore_checkpoint
    from nemo_exaone.config.presets import get_preset
    from nemo_exaone.model.builder import build_model_chunks
    from nemo_exaone.runtime.distributed import destroy_distributed, init_distributed

    tmp = tmp_path_factory.mktemp("dpo")
    try:
        init_distributed(seed=3)
        arch = get_preset("tiny")
        save_mcore_checkpoint(build_model_chunks(arch), tmp / "ref", arch)
    finally:
        destroy_distributed()
    data = tmp / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in list(toy_preference_records())[:16]))
    return tmp, data


def _run(tmp: Path, data: Path, name: str, *extra: str) -> tuple[list[dict], Path]:
    from nemo_exaone.training.loop import train

    run_dir = tmp / name
    cfg = compose_job("tiny_cpu_dpo", [
        f"run.dir={run_dir}", f"data.prepare_dir={tmp / 'prep'}",
        f"data.preference_file={data}", f"init.checkpoint={tmp / 'ref'}",
        "train.max_steps=3", "train.micro_batch_size=2", "train.global_batch_size=4",
        "checkpoint.save_at_end=false", "logging.progress=none", "logging.tensorboard=false",
        "optimizer.lr=1e-2", "schedule.warmup_steps=0", *extra])
    return train(cfg).metrics, run_dir


def _events(run_dir: Path, kind: str) -> list[dict]:
    path = run_dir / "events.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [r for r in rows if r.get("event") == kind]


def test_cached_and_on_the_fly_reference_give_the_same_losses(setup):
    tmp, data = setup
    cached, cached_dir = _run(tmp, data, "cache", "dpo.reference=cache")
    fly, fly_dir = _run(tmp, data, "fly", "dpo.reference=on_the_fly")
    caches = sorted(data.parent.glob(f"{data.name}.ref-*.pt"))
    assert len(caches) == 1  # next to the data
    assert [r["loss"] for r in cached] == pytest.approx([r["loss"] for r in fly], rel=1e-5)
    assert [r["loss/preference accuracy"] for r in cached] == \
        [r["loss/preference accuracy"] for r in fly]
    # Step 1: the policy is the reference, every implicit reward is 0: loss log 2.
    assert cached[0]["loss"] == pytest.approx(0.693147, abs=1e-5)
    # Later steps moved the policy away from the reference (the test compares real values).
    assert abs(cached[-1]["loss/preference margin"]) > 1e-4
    assert _events(cached_dir, "reference_cache")[0]["reused"] is False
    again, again_dir = _run(tmp, data, "again", "dpo.reference=cache", "train.max_steps=2")
    assert _events(again_dir, "reference_cache")[0]["reused"] is True
    assert [r["loss"] for r in again] == pytest.approx([r["loss"] for r in cached[:2]],
                                                       rel=1e-6)


def test_simpo_needs_no_reference_and_rpo_needs_rewards(setup):
    from nemo_exaone.config.errors import ConfigError

    tmp, data = setup
    metrics, _ = _run(tmp, data, "simpo", "dpo.preference_loss=simpo", "init.checkpoint=null",
                      "train.max_steps=1", "dpo.ref_policy_kl_penalty=2.0")
    assert metrics[0]["loss"] > 0
    with pytest.raises(ConfigError, match="needs chosen_reward and rejected_reward"):
        _run(tmp, data, "rpo", "dpo.preference_loss=rpo_sq", "train.max_steps=1")


def test_reward_model_starts_from_an_lm_checkpoint(setup):
    """The backbone of a reward model initialised from an LM checkpoint is that checkpoint
    (lr=0: nothing moves); the head is new and is saved with it."""
    import torch

    from nemo_exaone.alignment.reward_model import HEAD_KEY, load_reward_model
    from nemo_exaone.checkpoint.mcore_checkpoint import load_mcore_checkpoint, stored_keys
    from nemo_exaone.config.presets import get_preset
    from nemo_exaone.model.builder import build_model_chunks
    from nemo_exaone.runtime.distributed import destroy_distributed, init_distributed
    from nemo_exaone.training.loop import train

    tmp, data = setup
    cfg = compose_job("tiny_cpu_rm", [
        f"run.dir={tmp / 'rm'}", f"data.prepare_dir={tmp / 'prep'}",
        f"data.preference_file={data}", f"init.checkpoint={tmp / 'ref'}",
        "train.max_steps=1", "train.micro_batch_size=2", "train.global_batch_size=2",
        "optimizer.lr=0", "optimizer.min_lr=0", "schedule.warmup_steps=0",
        "logging.progress=none", "logging.tensorboard=false"])
    ckpt = Path(train(cfg).last_checkpoint)
    assert HEAD_KEY in stored_keys(ckpt) and HEAD_KEY not in stored_keys(tmp / "ref")
    try:
        init_distributed(seed=11)
        (lm,) = build_model_chunks(get_preset("tiny"))
        load_mcore_checkpoint([lm], tmp / "ref")
        expected = {k: v.clone() for k, v in lm.state_dict().items()
                    if k.startswith("decoder.") and isinstance(v, torch.Tensor)}
        destroy_distributed()
        (rm,), _, _ = load_reward_model(ckpt, seed=12)
        got = rm.state_dict()
    finally:
        destroy_distributed()
    assert expected
    for key, value in expected.items():
        assert torch.equal(got[key], value), key


def _dpo_losses(tmp: str, data: str, name: str, parallel: str) -> list[float]:
    metrics, _ = _run(Path(tmp), Path(data), name, f"parallel={parallel}",
                      "dpo.reference=on_the_fly", "train.max_steps=2")
    return [r["loss"] for r in metrics]


@pytest.mark.slow
def test_dpo_losses_at_tp2_equal_tp1(setup):
    """Vocab-parallel log-probs of policy and reference: two gloo ranks holding half the
    vocabulary each give the TP=1 losses (step 2 after one update included)."""
    from nemo_exaone.runtime.launch import spawn_local

    tmp, data = setup
    tp1 = spawn_local(_dpo_losses, 1, str(tmp), str(data), "tp1", "single")[0]
    tp2 = spawn_local(_dpo_losses, 2, str(tmp), str(data), "tp2", "tp2")[0]
    assert tp1[0] == pytest.approx(0.693147, abs=1e-5)
    assert tp2 == pytest.approx(tp1, rel=1e-4)
    assert tp1[1] != pytest.approx(tp1[0], abs=1e-4)  # the update changed the loss


def test_a_pair_longer_than_seq_length_is_skipped_counted_or_refused(setup, capsys):
    """data.too_long_documents for preference pairs: skip (the default) counts the pair in
    the data event; error refuses it without a traceback, naming file:line, both lengths and
    the settings; truncate is refused up front (a pair is never cut)."""
    from nemo_exaone.cli import main

    tmp, data = setup
    long_data = tmp / "with_long_pair.jsonl"
    long_pair = {"prompt": "Say it.", "chosen_response": "word " * 200,
                 "rejected_response": "no."}
    long_data.write_text(data.read_text() + json.dumps(long_pair) + "\n")
    line = len(data.read_text().splitlines()) + 1
    _, run_dir = _run(tmp, long_data, "skip_long", "train.max_steps=1")
    [event] = _events(run_dir, "data")
    assert event["skipped_documents"] == 1 and event["source"] == "preference"

    def train_command(name: str, *extra: str) -> str:
        args = ["train", "--config-name", "tiny_cpu_dpo", f"run.dir={tmp / name}",
                f"data.prepare_dir={tmp / 'prep'}", f"data.preference_file={long_data}",
                f"init.checkpoint={tmp / 'ref'}", "train.max_steps=1",
                "logging.progress=none", "logging.tensorboard=false", *extra]
        assert main(args) == 2
        return capsys.readouterr().err

    err = train_command("error_long", "data.too_long_documents=error")
    assert f"error: {long_data}:{line}: the pair does not fit train.seq_length=160 " in err
    assert "prompt + rejected response" in err and "raise train.seq_length" in err
    assert "data.too_long_documents=skip" in err and "Traceback" not in err
    chosen = int(err.split("prompt + chosen response ")[1].split()[0])
    assert chosen > 200  # the real length, not the limit
    err = train_command("truncate_long", "data.too_long_documents=truncate")
    assert "config error: data.too_long_documents=truncate: preference pairs are never cut" \
        in err


def test_no_pair_fitting_is_refused_naming_the_file(setup):
    from nemo_exaone.alignment.preference_data import PreferenceSamples, read_preference_jsonl
    from nemo_exaone.config.errors import InputError
    from nemo_exaone.data.assets import build_tiny_tokenizer
    from nemo_exaone.data.tokenizer import load_tokenizer

    tmp, data = setup
    tokenizer = load_tokenizer(build_tiny_tokenizer(tmp / "prep", vocab_size=2048))
    records = read_preference_jsonl(data)
    samples = PreferenceSamples(records, tokenizer, 160, too_long="skip")
    assert len(samples) == len(records) and samples.num_skipped == 0
    with pytest.raises(InputError, match=rf"{data}: none of its 16 pairs fits "
                       r"train.seq_length=8 \(all skipped as too long; the shortest needs "
                       r"\d+ tokens\); raise train.seq_length"):
        PreferenceSamples(records, tokenizer, 8, too_long="skip")
    with pytest.raises(InputError, match=rf"{data}:1: the pair does not fit"):
        PreferenceSamples(records, tokenizer, 8)
