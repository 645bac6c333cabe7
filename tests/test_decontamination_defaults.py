"""The published method's parameters, pinned by behaviour: S=50 and N=10, in the library and
the CLI, at the boundary in both directions.

A training example that shares a 49-character normalized substring with a test item is kept;
one that shares 50 characters is removed. The examples are short enough (at most N windows)
that every window is checked, so the outcome depends on S alone, and S=49 or S=51 flips one
of them. The test item is far longer than S, so it is matched through its windows, not
whole.
"""

from __future__ import annotations

import json
import random
import string

import pytest

from nemo_exaone.cli import main
from nemo_exaone.data.decontamination import (
    DecontaminationConfig,
    decontaminate,
    normalize_text,
    sampled_window_starts,
)

S, N = 50, 10
_rng = random.Random(50)
# A benchmark item of 200 normalized letters (random, so no accidental repeats), written with
# spaces, capitals and punctuation that normalization removes.
ITEM = "".join(_rng.choice(string.ascii_lowercase) for _ in range(200))
SHARED_AT = 40


def _spell(normalized: str) -> str:
    """The same normalized text as a user would write it: capitals, spaces, punctuation."""
    words = [normalized[i:i + 7] for i in range(0, len(normalized), 7)]
    return " ".join(w.capitalize() if i % 2 else w + "," for i, w in enumerate(words))


def _example(shared: int, filler: int) -> str:
    """``filler`` digits (never in the item) then ``shared`` characters of the item."""
    return _spell("".join(str(i % 10) for i in range(filler))
                  + ITEM[SHARED_AT:SHARED_AT + shared])


# 49 shared in 58 characters: 9 windows at S=50 (none in the item); at S=49, 10 windows
# (all checked, one in the item). 50 shared in 59 characters: 10 windows at S=50 (one in the
# item); at S=51, 9 windows, none in the item.
TRAIN = [{"id": "shares49", "text": _example(49, 9)},
         {"id": "shares50", "text": _example(50, 9)},
         {"id": "unrelated", "text": _spell("".join(_rng.choice("0123456789") for _ in range(300)))}]
TEST = [{"id": "item", "text": _spell(ITEM)}]


def _write(path, records) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return str(path)


def test_the_fixture_sits_on_the_boundary():
    assert normalize_text(TEST[0]["text"]) == ITEM
    assert [len(normalize_text(r["text"])) for r in TRAIN[:2]] == [58, 59]
    assert normalize_text(TRAIN[1]["text"])[-S:] in ITEM
    assert normalize_text(TRAIN[0]["text"])[-S:] not in ITEM


def test_library_defaults_are_the_published_method():
    config = DecontaminationConfig(train="t.jsonl", tests=["x.jsonl"], out="o", report="r")
    assert (config.window, config.samples) == (S, N)


def test_sampled_window_starts_defaults_are_the_published_method():
    starts = sampled_window_starts(ITEM)
    assert starts == sampled_window_starts(ITEM, window=S, samples=N, seed=0)
    assert len(starts) == N and max(starts) <= len(ITEM) - S
    assert starts != sampled_window_starts(ITEM, window=S, samples=N, seed=1)
    # S by its boundary: S characters hold one window, S-1 none
    assert sampled_window_starts(ITEM[:S]) == [0]
    assert sampled_window_starts(ITEM[:S - 1]) == []


def test_library_keeps_49_shared_characters_and_removes_50(tmp_path):
    report = decontaminate(DecontaminationConfig(
        train=_write(tmp_path / "train.jsonl", TRAIN),
        tests=[_write(tmp_path / "test.jsonl", TEST)],
        out=str(tmp_path / "clean.jsonl"), report=str(tmp_path / "report.json"),
        workers=0, show_progress=False))
    kept = [json.loads(line)["id"] for line in (tmp_path / "clean.jsonl").read_text().splitlines()]
    assert kept == ["shares49", "unrelated"]
    assert report["removed"] == 1
    [removed_ids] = [s["removed_ids"] for s in report["test_sets"].values()]
    assert removed_ids == ["shares50"]
    assert (report["params"]["window"], report["params"]["samples"]) == (S, N)


def test_cli_keeps_49_shared_characters_and_removes_50(tmp_path, capsys):
    train, test = _write(tmp_path / "train.jsonl", TRAIN), _write(tmp_path / "test.jsonl", TEST)
    out, report = tmp_path / "clean.jsonl", tmp_path / "report.json"
    assert main(["data", "decontaminate", "--train", train, "--test", test, "--out", str(out),
                 "--report", str(report), "--quiet"]) == 0
    capsys.readouterr()
    kept = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert kept == ["shares49", "unrelated"]
    params = json.loads(report.read_text())["params"]
    assert (params["window"], params["samples"]) == (S, N)


def test_default_n_catches_a_leak_covering_a_fifth_of_the_windows(tmp_path):
    """Stratified sampling with N=10 cuts 100 window starts into strata of 10; a leaked
    passage spanning 19 consecutive starts contains a whole stratum, so it is always found
    (11 starts, a tenth, are not enough: they can straddle two strata and miss both draws).
    N=1 would find each of these leaks with a probability near 1/5."""
    train = []
    for k in range(20):
        # 81 digits + 68 item characters = 149 characters = 100 windows; the leak covers 19.
        before = 7 * k % 82
        digits = "".join(str((i * 7 + k) % 10) for i in range(81))
        text = digits[:before] + ITEM[100:168] + digits[before:]
        train.append({"id": f"leak{k}", "text": _spell(text)})
    report = decontaminate(DecontaminationConfig(
        train=_write(tmp_path / "train.jsonl", train),
        tests=[_write(tmp_path / "test.jsonl", TEST)],
        out=str(tmp_path / "clean.jsonl"), report=str(tmp_path / "report.json"),
        workers=0, show_progress=False))
    assert report["removed"] == 20, report["removed"]


@pytest.mark.parametrize("window, kept", [(49, ["unrelated"]), (51, ["shares49", "shares50",
                                                                      "unrelated"])])
def test_the_boundary_moves_with_s(tmp_path, window, kept):
    """The fixture really discriminates: S=49 removes both examples, S=51 neither."""
    decontaminate(DecontaminationConfig(
        train=_write(tmp_path / "train.jsonl", TRAIN),
        tests=[_write(tmp_path / "test.jsonl", TEST)],
        out=str(tmp_path / "clean.jsonl"), report=str(tmp_path / "report.json"),
        window=window, workers=0, show_progress=False))
    got = [json.loads(line)["id"] for line in (tmp_path / "clean.jsonl").read_text().splitlines()]
    assert got == kept
