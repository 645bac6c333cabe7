"""Preference-data builder (issue 9 item 6) and the shared JSONL record reader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from reward_checkpoints import reward_checkpoint

from nemo_exaone.config.errors import InputError
from nemo_exaone.data.jsonl import BadRecordError, iter_records


# ------------------------------------------------------------------ the shared JSONL reader
def _readers():
    from nemo_exaone.alignment.preference_data import read_preference_jsonl
    from nemo_exaone.commands.align import read_scoring_input
    from nemo_exaone.data.sft_datasets import read_chat_jsonl

    return {"pairs": read_preference_jsonl, "scoring": read_scoring_input,
            "chats": lambda path: read_chat_jsonl([path])}


def test_iter_records_skips_blank_lines_and_names_bad_ones(tmp_path: Path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"a": 1}\n\n  \n{"a": 2}\n[1]\n', encoding="utf-8")
    seen = []
    with pytest.raises(BadRecordError, match=rf"^{path}:5: expected a JSON object"):
        for line_no, record in iter_records(path):
            seen.append((line_no, record))
    assert seen == [(1, {"a": 1}), (4, {"a": 2})]


@pytest.mark.parametrize("reader", ["pairs", "scoring", "chats"])
def test_every_record_reader_refuses_an_empty_file_naming_it(tmp_path: Path, reader: str):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n \n", encoding="utf-8")
    with pytest.raises(InputError, match=rf"^{path}: no "):
        _readers()[reader](path)


@pytest.mark.parametrize("reader", ["pairs", "scoring", "chats"])
def test_every_record_reader_names_a_malformed_line(tmp_path: Path, reader: str):
    good = {"prompt": "p", "response": "r", "chosen_response": "a", "rejected_response": "b",
            "messages": [{"role": "user", "content": "u"}, {"role": "assistant",
                                                             "content": "a"}]}
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(good) + "\n\n{oops\n", encoding="utf-8")
    with pytest.raises(ValueError, match=rf"{path}:3: malformed JSON"):
        _readers()[reader](path)


@pytest.mark.parametrize("reader", ["pairs", "scoring", "chats", "prompts"])
def test_every_record_reader_names_what_is_not_a_regular_file(tmp_path: Path, reader: str):
    from nemo_exaone.commands.align import read_prompts

    read = {**_readers(), "prompts": read_prompts}[reader]
    with pytest.raises(InputError, match="/dev/null: not a regular file .a character device.$"):
        read("/dev/null")
    with pytest.raises(InputError, match=f"{tmp_path}: is a directory, not a file$"):
        read(tmp_path)
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'absent.jsonl'}: no such file$"):
        read(tmp_path / "absent.jsonl")


def test_align_commands_name_the_real_cause_of_an_unusable_input(tmp_path: Path, capsys):
    import os

    from nemo_exaone.cli import main

    inputs = tmp_path / "inputs"
    inputs.mkdir()
    fifo = inputs / "pipe"
    os.mkfifo(fifo)
    cases = {"/dev/null": "not a regular file (a character device)",
             str(inputs): "is a directory, not a file", str(fifo): "not a regular file (a pipe)",
             str(inputs / "absent.jsonl"): "no such file"}
    for path, cause in cases.items():
        assert main(["align", "build-preferences", "--prompts", path, "--policy",
                     str(tmp_path / "p"), "--rm1", str(tmp_path / "rm"), "--out",
                     str(tmp_path / "out" / "pairs.jsonl")]) == 2
        assert f"error: --prompts {path}: {cause}\n" in capsys.readouterr().err
        assert main(["align", "score", "--ckpt", str(tmp_path / "rm"), "--input", path,
                     "--out", str(tmp_path / "out" / "scores.jsonl")]) == 2
        assert f"error: --input {path}: {cause}\n" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ choose_pair, closed form
from nemo_exaone.alignment.preference_builder import (  # noqa: E402
    BuildReport,
    PreferenceBuildConfig,
    build_preferences,
    choose_pair,
    kendall_tau_b,
)

CFG = PreferenceBuildConfig()


@pytest.mark.parametrize(("x", "y", "tau"), [
    ([1, 2, 3, 4], [10, 20, 30, 40], 1.0),
    ([1, 2, 3, 4], [4, 3, 2, 1], -1.0),
    ([1, 2, 3], [1, 3, 2], 1 / 3),  # C=2, D=1
    ([1, 1, 2], [1, 2, 3], 2 / 6 ** 0.5),  # C=2, D=0, P=3, one pair tied in x
    ([1, 1, 2, 3], [2, 2, 1, 1], -4 / 20 ** 0.5),  # C=0, D=4, P=6, Tx=1, Ty=2
    ([4, 3, 2, 1], [2, 0, 3, 1], 0.0),  # C=3, D=3
])
def test_kendall_tau_b_against_hand_computed_values(x, y, tau):
    assert kendall_tau_b(x, y) == pytest.approx(tau, abs=1e-12)
    assert kendall_tau_b(y, x) == pytest.approx(tau, abs=1e-12)  # symmetric


@pytest.mark.parametrize(("x", "y"), [([1, 2, 3], [5, 5, 5]), ([2, 2], [1, 3]), ([1], [1])])
def test_kendall_tau_b_is_undefined_when_one_side_is_all_ties(x, y):
    assert kendall_tau_b(x, y) is None


def test_each_drop_reason_and_keep():
    cases = {
        "too_few_responses": (["only"], [1.0], None, CFG),
        "duplicate_responses": (["same", " same\n"], [1.0, 2.0], None, CFG),
        "all_equal": (["a", "b", "c"], [0.5, 0.5, 0.5], [1.0, 2.0, 3.0], CFG),
        "gap_below_min": (["a", "b", "c"], [0.0, 0.5, 0.9], None,
                          PreferenceBuildConfig(min_score_gap=1.0)),
        "rm2_disagrees": (["a", "b", "c"], [3.0, 2.0, 1.0], [1.0, 2.0, 3.0], CFG),
        "tau_below_threshold": (["a", "b", "c", "d"], [4.0, 3.0, 2.0, 1.0],
                                [2.0, 0.0, 3.0, 1.0], PreferenceBuildConfig(min_tau=0.5)),
    }
    for reason, (responses, rm1, rm2, cfg) in cases.items():
        decision = choose_pair(responses, rm1, rm2, cfg)
        assert decision.reason == reason and not decision.kept, (reason, decision)
    # The same tau (0.0) passes the default floor of 0.0; y_w is scored above y_l by RM2.
    kept = choose_pair(["a", "b", "c", "d"], [4.0, 3.0, 2.0, 1.0], [2.0, 0.0, 3.0, 1.0], CFG)
    assert kept.kept and kept.tau == 0.0 and kept.rm2_orders_pair
    assert (kept.chosen_index, kept.rejected_index) == (0, 3)
    assert (kept.chosen_reward, kept.rejected_reward, kept.gap) == (4.0, 1.0, 3.0)
    assert (kept.rm2_chosen_reward, kept.rm2_rejected_reward) == (2.0, 1.0)


def test_gap_at_the_minimum_is_kept_and_rm2_details_survive_a_drop():
    at = choose_pair(["a", "b"], [1.0, 0.0], None, PreferenceBuildConfig(min_score_gap=1.0))
    assert at.kept and at.tau is None and at.rm2_orders_pair is None
    dropped = choose_pair(["a", "b", "c"], [3.0, 2.0, 1.0], [1.0, 2.0, 3.0], CFG)
    assert dropped.tau == -1.0 and dropped.rm2_orders_pair is False
    assert (dropped.chosen_index, dropped.rejected_index) == (0, 2)


def test_rm1_ties_take_the_first_best_and_first_worst():
    decision = choose_pair(["a", "b", "c", "d"], [2.0, 2.0, 1.0, 1.0], None, CFG)
    assert (decision.chosen_index, decision.rejected_index) == (0, 2)


def test_best_and_worst_with_the_same_text_are_duplicates():
    decision = choose_pair(["x", "y", "x "], [3.0, 2.0, 1.0], None, CFG)
    assert decision.reason == "duplicate_responses" and decision.chosen_index == 0


def test_rm2_ties_on_the_pair_do_not_confirm_it():
    decision = choose_pair(["a", "b", "c"], [3.0, 2.0, 1.0], [1.0, 0.0, 1.0], CFG)
    assert decision.reason == "rm2_disagrees" and decision.rm2_orders_pair is False


def test_rm2_checks_can_be_switched_off():
    relaxed = PreferenceBuildConfig(require_rm2_order=False, min_tau=None)
    assert choose_pair(["a", "b", "c"], [3.0, 2.0, 1.0], [1.0, 2.0, 3.0], relaxed).kept
    order_only = PreferenceBuildConfig(min_tau=None)
    assert choose_pair(["a", "b", "c", "d"], [4.0, 3.0, 2.0, 1.0], [2.0, 0.0, 9.0, 1.0],
                       order_only).kept  # tau = 0, RM2(y_w) > RM2(y_l)
    # An undefined tau (RM2 all ties) cannot pass a tau floor.
    no_order = PreferenceBuildConfig(require_rm2_order=False)
    decision = choose_pair(["a", "b"], [1.0, 0.0], [5.0, 5.0], no_order)
    assert decision.reason == "tau_below_threshold" and decision.tau is None


@pytest.mark.parametrize(("rm1", "match"), [([1.0], "1 scores for 2"),
                                             ([1.0, float("nan")], r"rm1\[1\]"),
                                             ([1.0, True], r"rm1\[1\]")])
def test_bad_scores_are_refused_naming_them(rm1, match):
    with pytest.raises(ValueError, match=match):
        choose_pair(["a", "b"], rm1, None, CFG)


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"samples_per_prompt": 0}, "samples_per_prompt"), ({"min_score_gap": -1}, "min_score_gap"),
    ({"min_tau": 1.5}, "min_tau"), ({"seed": 1.5}, "seed")])
def test_config_refuses_bad_values_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        PreferenceBuildConfig(**kwargs)


# ------------------------------------------------------------------ build_preferences, rule RMs
def _capitals(text: str) -> float:
    return float(sum(c.isupper() for c in text))


def _rule_rm(scale: float):
    def score(prompts, responses):
        return [[scale * _capitals(r) - 0.01 * len(r) for r in rs] for rs in responses]
    return score


def test_build_preferences_with_rule_based_rewards(tmp_path: Path):
    from nemo_exaone.alignment.preference_data import read_preference_jsonl

    prompts = ["Say hi.", [{"role": "user", "content": "Count."}], "Same.", "Tie."]
    loud = {"Say hi.": ["HI THERE", "hi"], "Count.": ["ONE TWO", "one"], "Same.": ["x", "x"],
            "Tie.": ["ab", "cd"]}
    quiet = {"Say hi.": ["Hi", "hey"], "Count.": ["One", "1 2"], "Same.": ["x", "x"],
             "Tie.": ["ef", "gh"]}

    def sampler(table):
        def sample(ps, n):
            assert n == 2
            return [table[p if isinstance(p, str) else p[0]["content"]] for p in ps]
        return sample

    def contrary(prompts, responses):  # RM2 disagrees on prompt 1 only
        base = _rule_rm(1.0)(prompts, responses)
        base[1] = [-v for v in base[1]]
        return base

    records, report = build_preferences(
        prompts, {"loud": sampler(loud), "quiet": sampler(quiet)}, _rule_rm(1.0), contrary,
        PreferenceBuildConfig(samples_per_prompt=2),
        metadata=[{"id": f"p{i}", "prompt": "not copied over"} for i in range(4)])
    assert isinstance(report, BuildReport)
    assert report.prompts == 4 and report.responses == 16
    assert report.kept + sum(report.dropped.values()) == report.prompts
    assert report.kept == 1 and report.dropped == {"duplicate_responses": 1,
                                                   "rm2_disagrees": 1, "all_equal": 1}
    (record,) = records
    assert record["id"] == "p0" and record["prompt"] == "Say hi."
    assert record["chosen_response"] == "HI THERE" and record["chosen_policy"] == "loud"
    assert record["rejected_response"] == "hey" and record["rejected_policy"] == "quiet"
    assert record["chosen_reward"] == pytest.approx(7 - 0.08)
    assert record["rm2_kendall_tau"] == pytest.approx(1.0)
    assert report.chosen_by_policy == {"loud": 1} and report.rejected_by_policy == {"quiet": 1}
    assert report.rm2_order_rate == pytest.approx(0.5)  # prompts 0 and 1 had an RM1 pair
    assert report.mean_tau == pytest.approx(0.0)  # +1 and -1
    assert report.mean_gap == pytest.approx(record["chosen_reward"] - record["rejected_reward"])
    out = tmp_path / "pairs.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    (pair,) = read_preference_jsonl(out)
    assert pair.chosen == "HI THERE" and pair.rejected == "hey"
    assert pair.chosen_reward == record["chosen_reward"]
    data = json.loads(report.to_json())
    assert data["kept"] == 1 and data["settings"]["samples_per_prompt"] == 2
    assert "rm2_disagrees: 1" in report.summary()


def test_build_preferences_refuses_a_sampler_of_the_wrong_shape():
    with pytest.raises(ValueError, match="sample_fn 'policy0' returned 1 entries for 2"):
        build_preferences(["a", "b"], lambda ps, n: [["x"]], _rule_rm(1.0), None,
                          PreferenceBuildConfig(samples_per_prompt=1))
    with pytest.raises(ValueError, match="rm1_fn returned 1 entries for 2"):
        build_preferences(["a", "b"], [lambda ps, n: [["x", "Y"]] * 2],
                          lambda ps, rs: [[1.0, 2.0]], None, PreferenceBuildConfig())


# ------------------------------------------------------------------ the command, end to end
VOCAB = 512




@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    """Two random tiny policies carrying a real tokenizer, a reward model on the first one's
    backbone and its negation; a prompts file."""
    import shutil

    from nemo_exaone.checkpoint.hf_to_mcore import convert_hf_to_mcore
    from nemo_exaone.checkpoint.synthetic import write_random_hf_checkpoint
    from nemo_exaone.config.presets import get_preset
    from nemo_exaone.data.assets import build_tiny_tokenizer
    from nemo_exaone.data.tokenizer import load_tokenizer

    root = tmp_path_factory.mktemp("build_prefs")
    tokenizer_dir = build_tiny_tokenizer(root / "prep", vocab_size=VOCAB)
    arch = get_preset("tiny").replace(name="tiny-prefs", vocab_size=VOCAB,
                                      eos_token_id=load_tokenizer(tokenizer_dir).eot_id)
    out: dict = {"root": root, "arch": arch}
    for name, seed in (("policy_a", 1), ("policy_b", 2)):
        hf = write_random_hf_checkpoint(root / f"hf_{name}", arch, seed=seed, std=0.2)
        for item in Path(tokenizer_dir).iterdir():
            shutil.copy(item, hf / item.name)
        convert_hf_to_mcore(hf, root / name, progress=False)
        out[name] = root / name
    out["rm"] = reward_checkpoint(out["policy_a"], root / "rm", arch, 40.0)
    out["rm_negated"] = reward_checkpoint(out["policy_a"], root / "rm_negated", arch, -40.0)
    prompts = root / "prompts.jsonl"
    prompts.write_text(
        json.dumps({"id": "q1", "prompt": "Say hello to the world."}) + "\n"
        + json.dumps({"id": "q2", "prompt": [{"role": "system", "content": "Be brief."},
                                             {"role": "user", "content": "The quick fox?"}]})
        + "\n\n" + json.dumps({"id": "q3", "prompt": "Tell me about Korean."}) + "\n",
        encoding="utf-8")
    out["prompts"] = prompts
    return out


def _build(models: dict, out: Path, *extra: str) -> list[str]:
    return ["align", "build-preferences", "--prompts", str(models["prompts"]),
            "--rm1", str(models["rm"]), "--out", str(out), "--samples-per-prompt", "2",
            "--max-new-tokens", "6", "--seed", "3", "--batch-size", "4", *extra]


def test_build_preferences_command_end_to_end(models, capfd):
    # capfd, not capsys: importing Megatron's inference engines calls faulthandler.enable(),
    # which needs a real file descriptor behind sys.stderr.
    from nemo_exaone.alignment.preference_data import read_preference_jsonl
    from nemo_exaone.alignment.reward_model import checkpoint_tokenizer, load_reward_model, score
    from nemo_exaone.cli import main
    from nemo_exaone.runtime.distributed import destroy_distributed

    out = models["root"] / "pairs.jsonl"
    policies = [str(models["policy_a"]), str(models["policy_b"])]
    assert main(_build(models, out, "--policy", policies[0], "--policy", policies[1],
                       "--rm2", str(models["rm"]))) == 0
    captured = capfd.readouterr()
    assert "[build-preferences] policy 2/2" in captured.err and "rm2" in captured.err
    assert "kept of 3 prompts" in captured.out
    report = json.loads((models["root"] / "pairs.report.json").read_text())
    assert report["prompts"] == 3 and report["responses"] == 12
    assert report["kept"] + sum(report["dropped"].values()) == 3
    # RM2 is RM1 here: every ranking agrees.
    assert report["kept"] >= 2 and report["mean_tau"] == pytest.approx(1.0)
    pairs = read_preference_jsonl(out)  # valid DPO input
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(pairs) == len(rows) == report["kept"]
    assert {r["id"] for r in rows} <= {"q1", "q2", "q3"}
    for row, pair in zip(rows, pairs):
        assert row["num_responses"] == 4 and row["rm2_kendall_tau"] == pytest.approx(1.0)
        assert {row["chosen_policy"], row["rejected_policy"]} <= set(policies)
        assert row["chosen_reward"] > row["rejected_reward"]
        assert row["chosen_rm2_reward"] == pytest.approx(row["chosen_reward"])
        if row["id"] == "q2":
            assert pair.messages[0] == {"role": "system", "content": "Be brief."}
    # The rewards in the file are RM1's scores of exactly these texts.
    try:
        chunks, _, path = load_reward_model(models["rm"])
        again = score(chunks, checkpoint_tokenizer(path),
                      [(p.messages, text) for p in pairs for text in (p.chosen, p.rejected)],
                      chat_format="exaone3")
    finally:
        destroy_distributed()
    recorded = [v for p in pairs for v in (p.chosen_reward, p.rejected_reward)]
    assert again == pytest.approx(recorded, abs=1e-4)

    # An RM2 that ranks every response the other way keeps nothing, and says why.
    contrary = models["root"] / "contrary.jsonl"
    assert main(_build(models, contrary, "--policy", policies[0], "--rm2",
                       str(models["rm_negated"]), "--report",
                       str(models["root"] / "contrary.json"))) == 0
    report = json.loads((models["root"] / "contrary.json").read_text())
    assert report["kept"] == 0 and report["rm2_order_rate"] == 0.0
    assert report["dropped"].get("rm2_disagrees", 0) >= 1
    assert sum(report["dropped"].values()) == 3 and contrary.read_text() == ""


def test_build_preferences_command_refusals(models, capsys, tmp_path):
    from nemo_exaone.cli import main

    policy = str(models["policy_a"])
    existing = tmp_path / "existing.jsonl"
    existing.write_text("keep\n")

    def refused(args: list[str], *needles: str) -> None:
        assert main(args) == 2
        err = capsys.readouterr().err
        for needle in needles:
            assert needle in err, (needle, err)

    refused(_build(models, existing, "--policy", policy), "--overwrite")
    assert existing.read_text() == "keep\n"
    refused(_build(models, models["prompts"], "--policy", policy, "--overwrite"),
            "same path as --prompts")
    refused(_build(models, tmp_path / "p.jsonl", "--policy", policy, "--rm2", policy),
            "--rm2", "not a reward model")
    refused(_build(models, tmp_path / "p.jsonl", "--policy", policy, "--top-k", "5",
                   "--top-p", "0.9"), "top_k=5 and top_p=0.9")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "fine"}\n{"text": "no prompt"}\n')
    refused(["align", "build-preferences", "--prompts", str(bad), "--policy", policy,
             "--rm1", str(models["rm"]), "--out", str(tmp_path / "p.jsonl")],
            f"{bad}:2: missing key 'prompt'")
    assert not list(tmp_path.glob("p*.json*"))
