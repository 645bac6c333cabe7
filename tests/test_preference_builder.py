"""Preference-data builder (issue 9 item 6) and the shared JSONL record reader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

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
