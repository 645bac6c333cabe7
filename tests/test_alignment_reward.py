"""Reward model: the head reads the last real token, training through the one loop raises
held-out pair accuracy on the toy task, TP=2 scores equal TP=1, the score command, an
EXAONE 4.0 reward model scores its own chat format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from shipped_configs import compose_job

from nemo_exaone.alignment.preference_data import (
    follows_toy_rule,
    read_preference_jsonl,
    toy_preference_records,
)

SEQ = 160


def _write(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _pair_accuracy(chunks, tokenizer, path: Path) -> float:
    from nemo_exaone.alignment.reward_model import score

    records = read_preference_jsonl(path)
    chosen = score(chunks, tokenizer, [(r.messages, r.chosen) for r in records], batch_size=16,
                   chat_format="exaone3")
    rejected = score(chunks, tokenizer, [(r.messages, r.rejected) for r in records],
                     batch_size=16, chat_format="exaone3")
    return sum(c > r for c, r in zip(chosen, rejected)) / len(records)


def _fresh_reward_model(seed: int):
    from nemo_exaone.alignment.reward_model import attach_reward_head
    from nemo_exaone.config.presets import get_preset
    from nemo_exaone.model.builder import build_model_chunks
    from nemo_exaone.runtime.distributed import init_distributed

    init_distributed(seed=seed)
    chunks = build_model_chunks(get_preset("tiny"))
    attach_reward_head(chunks[0])
    return chunks


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A reward model trained 8 steps on the toy pairs of 15 prompts; 30 held-out pairs
    (10 other prompts); the held-out accuracy of an untrained model of the same config."""
    from nemo_exaone.alignment.reward_model import checkpoint_tokenizer
    from nemo_exaone.runtime.distributed import destroy_distributed
    from nemo_exaone.training.loop import train

    tmp = tmp_path_factory.mktemp("rm")
    records = list(toy_preference_records())
    assert all(follows_toy_rule(r["chosen_response"]) and not follows_toy_rule(
        r["rejected_response"]) for r in records)
    train_file = _write(tmp / "train.jsonl", records[:45])
    heldout = _write(tmp / "heldout.jsonl", records[45:])
    cfg = compose_job("tiny_cpu_rm", [
        f"run.dir={tmp / 'run'}", f"data.prepare_dir={tmp / 'prep'}",
        f"data.preference_file={train_file}", f"train.seq_length={SEQ}",
        "train.max_steps=8", "train.micro_batch_size=8", "checkpoint.save_interval=0", "logging.progress=none",
        "logging.tensorboard=false", "optimizer.lr=2e-3"])
    result = train(cfg)
    ckpt = Path(result.last_checkpoint)
    tokenizer = checkpoint_tokenizer(ckpt)
    try:
        before = _pair_accuracy(_fresh_reward_model(cfg.run.seed), tokenizer, heldout)
    finally:
        destroy_distributed()
    return {"result": result, "ckpt": ckpt, "heldout": heldout, "before": before,
            "tokenizer": tokenizer, "tmp": tmp}


def test_training_raises_heldout_pair_accuracy(trained):
    from nemo_exaone.alignment.reward_model import load_reward_model
    from nemo_exaone.runtime.distributed import destroy_distributed

    metrics = trained["result"].metrics
    assert metrics[-1]["loss"] < 0.5 * metrics[0]["loss"]
    assert metrics[-1]["loss/reward accuracy"] == 1.0
    try:
        chunks, _, _ = load_reward_model(trained["ckpt"])
        after = _pair_accuracy(chunks, trained["tokenizer"], trained["heldout"])
    finally:
        destroy_distributed()
    assert after >= 0.9, (trained["before"], after)
    # Not solved at initialisation: training raised held-out accuracy by >= 25 points.
    assert after - trained["before"] >= 0.25, (trained["before"], after)


def test_score_reads_the_last_real_token_not_the_padding():
    """The same sequence scores the same alone and right-padded next to a longer one."""
    from nemo_exaone.alignment.reward_model import score_token_batches
    from nemo_exaone.runtime.distributed import destroy_distributed

    try:
        chunks = _fresh_reward_model(5)
        short, long = [5, 17, 99, 23], [8, 4, 61, 2, 9, 33, 12, 71]
        alone = score_token_batches(chunks, [short], batch_size=1)
        padded = score_token_batches(chunks, [short, long], batch_size=2, pad_id=0)
        other_pad = score_token_batches(chunks, [short, long], batch_size=2, pad_id=7)
        longer_alone = score_token_batches(chunks, [long], batch_size=1)
    finally:
        destroy_distributed()
    assert padded[0] == pytest.approx(alone[0], abs=1e-5)
    assert other_pad[0] == pytest.approx(alone[0], abs=1e-5)
    assert padded[1] == pytest.approx(longer_alone[0], abs=1e-5)
    assert abs(alone[0] - longer_alone[0]) > 1e-4  # scores do depend on the tokens


def _score_at_tp(ckpt: str, pairs: list, tp: int) -> list[float]:
    from nemo_exaone.alignment.reward_model import checkpoint_tokenizer, load_reward_model
    from nemo_exaone.alignment.reward_model import score as score_pairs
    from nemo_exaone.runtime.distributed import destroy_distributed

    try:
        chunks, _, path = load_reward_model(ckpt, tensor_parallel=tp)
        return score_pairs(chunks, checkpoint_tokenizer(path), pairs, batch_size=3,
                           chat_format="exaone3")
    finally:
        destroy_distributed()


@pytest.mark.slow
def test_tp2_scores_equal_tp1(trained):
    from nemo_exaone.runtime.launch import spawn_local

    pairs = [(r.messages, r.chosen) for r in read_preference_jsonl(trained["heldout"])[:4]]
    pairs.append(("Hi.", "hello"))
    tp1 = spawn_local(_score_at_tp, 1, str(trained["ckpt"]), pairs, 1)[0]
    tp2 = spawn_local(_score_at_tp, 2, str(trained["ckpt"]), pairs, 2)
    assert tp2[0] == pytest.approx(tp2[1], abs=0)
    assert tp2[0] == pytest.approx(tp1, abs=1e-4)


def test_score_command_writes_scores_atomically_and_guards_paths(trained):
    from nemo_exaone.cli import main
    from nemo_exaone.runtime.distributed import destroy_distributed

    tmp = trained["tmp"]
    src = _write(tmp / "score_in.jsonl", [
        {"id": "a", "prompt": "Say hi. Answer in capital letters.", "response": "HELLO THERE."},
        {"id": "b", "prompt": [{"role": "user", "content": "Say hi. Answer in capital "
                                "letters."}], "response": "hello there."}])
    out = tmp / "scores.jsonl"
    try:
        assert main(["align", "score", "--ckpt", str(trained["ckpt"]), "--input", str(src),
                     "--out", str(out), "--batch-size", "1"]) == 0
    finally:
        destroy_distributed()
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["a", "b"]
    assert rows[0]["score"] > rows[1]["score"]  # the trained preference
    before = out.read_bytes()
    assert main(["align", "score", "--ckpt", str(trained["ckpt"]), "--input", str(src),
                 "--out", str(out)]) == 2  # exists, no --overwrite
    assert main(["align", "score", "--ckpt", str(trained["ckpt"]), "--input", str(src),
                 "--out", str(src), "--overwrite"]) == 2  # never over the input
    assert out.read_bytes() == before
    bad = _write(tmp / "bad.jsonl", [{"prompt": "x"}])
    assert main(["align", "score", "--ckpt", str(trained["ckpt"]), "--input", str(bad),
                 "--out", str(tmp / "never.jsonl")]) == 2
    assert not (tmp / "never.jsonl").exists()


def test_reward_objective_needs_preference_data():
    from nemo_exaone.config.errors import ConfigError
    from nemo_exaone.training.config import validate_job

    cfg = compose_job("tiny_cpu_rm", ["data=shipped"])
    with pytest.raises(ConfigError, match="data.source=preference"):
        validate_job(cfg)


@pytest.fixture(scope="module")
def exaone4_models(tmp_path_factory) -> dict:
    """A random tiny4 (EXAONE 4.0) policy carrying a real tokenizer and a reward model on its
    backbone, both saved by the training stack."""
    import shutil

    from reward_checkpoints import reward_checkpoint

    from nemo_exaone.checkpoint.hf_to_mcore import convert_hf_to_mcore
    from nemo_exaone.checkpoint.synthetic import write_random_hf_checkpoint
    from nemo_exaone.config.presets import get_preset
    from nemo_exaone.data.assets import build_tiny_tokenizer
    from nemo_exaone.data.tokenizer import load_tokenizer

    root = tmp_path_factory.mktemp("rm4")
    tokenizer_dir = build_tiny_tokenizer(root / "prep", vocab_size=512)
    arch = get_preset("tiny4").replace(name="tiny4-rm", vocab_size=512,
                                       eos_token_id=load_tokenizer(tokenizer_dir).eot_id)
    assert arch.model_type == "exaone4"
    hf = write_random_hf_checkpoint(root / "hf", arch, seed=4, std=0.2)
    for item in Path(tokenizer_dir).iterdir():
        shutil.copy(item, hf / item.name)
    convert_hf_to_mcore(hf, root / "policy", progress=False)
    rm = reward_checkpoint(root / "policy", root / "rm", arch, 40.0)
    return {"root": root, "policy": root / "policy", "rm": rm}


def _scores_of(rm: Path, conversations: list[tuple[list[dict], str]]) -> dict[str, list]:
    """Scores of each conversation rendered in either chat format, by the reward model's
    head on exactly those token ids (score_token_batches, no rendering of its own)."""
    from nemo_exaone.alignment.preference_data import encode_conversation
    from nemo_exaone.alignment.reward_model import (
        checkpoint_tokenizer,
        load_reward_model,
        score_token_batches,
    )
    from nemo_exaone.data.chat_format import render_chat
    from nemo_exaone.runtime.distributed import destroy_distributed

    try:
        chunks, arch, path = load_reward_model(rm)
        tokenizer = checkpoint_tokenizer(path)
        out = {}
        for chat_format in ("exaone3", "exaone4"):
            ids = [encode_conversation(tokenizer, m, r, chat_format).ids
                   for m, r in conversations]
            for (messages, response), seq in zip(conversations, ids):  # the rendering itself
                assert tokenizer.decode(seq) == render_chat(
                    [*messages, {"role": "assistant", "content": response}],
                    chat_format=chat_format)
            out[chat_format] = score_token_batches(chunks, ids, batch_size=2,
                                                   pad_id=tokenizer.pad_id or 0)
    finally:
        destroy_distributed()
    # The two renderings score apart, so the scores say which one was scored.
    assert all(abs(a - b) > 1e-3 for a, b in zip(out["exaone3"], out["exaone4"])), out
    return out


def test_exaone4_reward_model_scores_the_exaone4_rendering(exaone4_models, capfd):
    """`align score` and `align build-preferences` with a 4.0 reward model score the token
    ids of the 4.0 chat format (newline after the role tag, the empty think block), not
    3.x's."""
    from nemo_exaone.alignment.preference_data import read_preference_jsonl
    from nemo_exaone.cli import main

    root, rm = exaone4_models["root"], str(exaone4_models["rm"])
    records = [{"prompt": "Say hi.", "response": "hello there."},
               {"prompt": [{"role": "system", "content": "Be brief."},
                           {"role": "user", "content": "The quick fox?"}],
                "response": "It jumps."}]
    src = _write(root / "score_in.jsonl", records)
    out = root / "scores.jsonl"
    assert main(["align", "score", "--ckpt", rm, "--input", str(src), "--out", str(out)]) == 0
    scored = [json.loads(line)["score"] for line in out.read_text().splitlines()]
    conversations = [([{"role": "user", "content": records[0]["prompt"]}],
                      records[0]["response"]), (records[1]["prompt"], records[1]["response"])]
    assert scored == pytest.approx(_scores_of(exaone4_models["rm"], conversations)["exaone4"],
                                   abs=1e-5)

    # build-preferences: the rewards it records are the 4.0 rendering's too.
    prompts = root / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "Tell me about Korean."}) + "\n", encoding="utf-8")
    pairs_file = root / "pairs.jsonl"
    assert main(["align", "build-preferences", "--prompts", str(prompts), "--policy",
                 str(exaone4_models["policy"]), "--rm1", rm, "--out", str(pairs_file),
                 "--samples-per-prompt", "3", "--max-new-tokens", "5", "--seed", "3"]) == 0
    capfd.readouterr()
    pairs = read_preference_jsonl(pairs_file)
    assert len(pairs) == 1, pairs_file.read_text()
    recorded = [pairs[0].chosen_reward, pairs[0].rejected_reward]
    expected = _scores_of(exaone4_models["rm"],
                          [(pairs[0].messages, pairs[0].chosen),
                           (pairs[0].messages, pairs[0].rejected)])["exaone4"]
    assert recorded == pytest.approx(expected, abs=1e-4)
