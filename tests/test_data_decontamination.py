"""EXAONE-style decontamination: what must be removed, what must never be, collisions."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from nemo_exaone.cli import main
from nemo_exaone.data.assets import asset_paths
from nemo_exaone.data.decontamination import (
    DecontaminationConfig,
    _codepoints,
    _direct_hashes,
    build_window_pool,
    decontaminate,
    normalize_text,
    sample_windows,
    sampled_window_starts,
    window_hashes,
)

ALPHABET = "abcdefghij가나다라마바사아자차0123456789"


def _words(rng: random.Random, n: int, alphabet: str = ALPHABET) -> str:
    return " ".join("".join(rng.choice(alphabet) for _ in range(rng.randint(2, 7)))
                    for _ in range(n))


def _jsonl(path, records):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records),
                    encoding="utf-8")
    return str(path)


def _run(tmp_path, train, tests, **kwargs):
    kwargs.setdefault("show_progress", False)
    kwargs.setdefault("workers", 0)
    config = DecontaminationConfig(
        train=_jsonl(tmp_path / "train.jsonl", train),
        tests=[_jsonl(tmp_path / f"test{i}.jsonl", t) for i, t in enumerate(tests)],
        out=str(tmp_path / "clean.jsonl"), report=str(tmp_path / "report.json"), **kwargs)
    report = decontaminate(config)
    kept = [json.loads(line) for line in (tmp_path / "clean.jsonl").read_text().splitlines()]
    return report, kept


def test_normalization_keeps_unicode_letters_and_digits_case_folded():
    assert normalize_text("Hello, World! 안녕하세요 ABC_def ＡＢＣ 123") == (
        "helloworld안녕하세요abcdefabc123")
    assert normalize_text("Straße — 東京 ½") == "strasse東京12"
    assert normalize_text("...   ") == ""


def test_rolling_hash_equals_direct_hash():
    codepoints = _codepoints("".join(chr(c) for c in range(0x41, 0x41 + 300)) + "가나다" * 40)
    for window in (1, 7, 50):
        rolled = window_hashes(codepoints, window)
        starts = np.arange(len(codepoints) - window + 1)
        assert np.array_equal(rolled, _direct_hashes(codepoints, starts, window))


def test_sampling_is_deterministic_distinct_and_spread():
    text = _words(random.Random(1), 400)
    first = sampled_window_starts(text, 50, 10, seed=3)
    assert first == sampled_window_starts(text, 50, 10, seed=3)
    assert first != sampled_window_starts(text, 50, 10, seed=4)
    assert len(set(first)) == 10 and first == sorted(first)
    count = len(normalize_text(text)) - 49
    assert all(k * count // 10 <= s < (k + 1) * count // 10 for k, s in enumerate(first))
    owners, starts = sample_windows(np.array([49, 50, 55]), np.zeros(3, np.uint64), 50, 10)
    assert owners.tolist() == [1] + [2] * 6  # too short: none; few windows: all of them


@pytest.mark.parametrize("seed", range(5))
def test_leaked_passage_covering_a_stratum_is_always_removed_with_sampling(tmp_path, seed):
    """With N strata, a test passage spanning >= 1/N of an example's windows (plus S - 1
    characters) always contains one sampled window: default sampling must catch it."""
    rng = random.Random(seed)
    item = _words(rng, 80)  # ~400 normalized characters
    filler = _words(rng, 300, "klmnopqrstuvwxyz")  # ~1350 characters
    cut = rng.randint(0, len(filler))
    train = [{"text": filler[:cut] + " " + item + " " + filler[cut:]}]
    report, _ = _run(tmp_path, train, [[{"text": item}]], samples=10)
    assert report["removed"] == 1


def test_example_equal_to_a_test_item_is_always_removed(tmp_path):
    rng = random.Random(0)
    items = [{"id": f"t{i}", "text": _words(rng, 30)} for i in range(20)]
    # re-cased, re-punctuated copies of every test item, among clean documents
    train = [{"id": f"leak{i}", "text": "  " + it["text"].upper().replace(" ", ", ") + "!"}
             for i, it in enumerate(items)]
    train += [{"id": f"clean{i}", "text": _words(rng, 60, "klmnopqrstuvwxyz")} for i in range(40)]
    report, kept = _run(tmp_path, train, [items])
    assert report["removed"] == 20 and report["kept"] == 40
    assert {r["id"] for r in kept} == {f"clean{i}" for i in range(40)}
    removed = report["test_sets"][str(tmp_path / "test0.jsonl")]
    assert sorted(removed["removed_ids"]) == sorted(f"leak{i}" for i in range(20))
    assert all(m["test_item"] == "t" + m["id"][4:] for m in removed["matches"])


@pytest.mark.parametrize("seed", range(20))
def test_embedded_test_item_is_always_found_when_checking_every_window(tmp_path_factory, seed):
    rng = random.Random(seed)
    position = rng.random()
    item = _words(rng, 20)
    filler = _words(rng, 200, "klmnopqrstuvwxyz")
    cut = int(position * len(filler))
    train = [{"text": filler[:cut] + " " + item + " " + filler[cut:]}]
    report, _ = _run(tmp_path_factory.mktemp("d"), train, [[{"text": item}]], samples=0)
    assert report["removed"] == 1


@pytest.mark.parametrize("seed", range(20))
def test_example_sharing_no_window_is_never_removed(tmp_path_factory, seed):
    rng = random.Random(seed)
    tests = [{"text": _words(rng, 40, "abcdefgh가나다라")} for _ in range(5)]
    # different alphabets: no 50-character normalized window can be shared
    train = [{"text": _words(rng, 80, "ijklmnop마바사아")} for _ in range(10)]
    for samples in (10, 0):
        report, kept = _run(tmp_path_factory.mktemp("d"), train, [tests], samples=samples)
        assert report["removed"] == 0 and len(kept) == 10


def test_hash_collisions_never_remove_clean_examples(tmp_path):
    rng = random.Random(7)
    items = [{"id": f"t{i}", "text": _words(rng, 40)} for i in range(30)]
    train = [{"id": f"leak{i}", "text": items[i]["text"]} for i in range(5)]
    train += [{"id": f"clean{i}", "text": _words(rng, 60, "klmnopqrstuvwxyz")} for i in range(60)]
    pool = build_window_pool([_jsonl(tmp_path / "t.jsonl", items)], ["text"], hash_mask=0xF)
    assert len(np.unique(pool.hashes)) <= 16  # every lookup now hits many candidates
    report, kept = _run(tmp_path, train, [items], hash_mask=0xF, samples=0)
    assert report["removed"] == 5
    assert {r["id"] for r in kept} == {f"clean{i}" for i in range(60)}


def test_pool_stores_unique_windows_compactly(tmp_path):
    text = _words(random.Random(3), 200)
    path = _jsonl(tmp_path / "t.jsonl", [{"text": text}, {"text": text}, {"text": "short"}])
    pool = build_window_pool([path], ["text"])
    windows = len(normalize_text(text)) - 49
    assert len(pool) == windows  # duplicates of the repeated item are stored once
    assert pool.stats["test_fields_shorter_than_window"] == 1
    assert pool.hashes.dtype == np.uint64 and np.all(np.diff(pool.hashes.astype(np.float64)) >= 0)
    assert pool.nbytes < 20 * windows * 2  # far below a Python set of 50-char strings


def test_short_examples_are_kept_and_counted(tmp_path):
    item = _words(random.Random(5), 30)
    report, kept = _run(tmp_path, [{"text": item[:30]}, {"text": "!!!"}], [[{"text": item}]])
    assert report["removed"] == 0 and report["kept_shorter_than_window"] == 2 and len(kept) == 2


def test_multiple_test_sets_and_keys_are_reported_separately(tmp_path):
    rng = random.Random(11)
    first = [{"id": "q1", "question": _words(rng, 25), "choices": ["a", "b"]}]
    second = [{"id": "q2", "question": "x", "choices": [_words(rng, 25), "b"]}]
    train = [{"id": "a", "text": first[0]["question"]}, {"id": "b", "text": second[0]["choices"][0]}]
    report, kept = _run(tmp_path, train, [first, second], test_keys=["question", "choices"])
    assert kept == [] and report["removed"] == 2
    sets = report["test_sets"]
    assert sets[str(tmp_path / "test0.jsonl")]["removed_ids"] == ["a"]
    assert sets[str(tmp_path / "test1.jsonl")]["removed_ids"] == ["b"]


def test_workers_give_identical_output(tmp_path):
    corpus, bench = asset_paths()["corpus"], asset_paths()["benchmark_test"]
    outputs = []
    for workers in (0, 2):
        out, rep = tmp_path / f"c{workers}.jsonl", tmp_path / f"r{workers}.json"
        report = decontaminate(DecontaminationConfig(
            train=str(corpus), tests=[str(bench)], out=str(out), report=str(rep),
            test_keys=["question"], workers=workers, chunk_bytes=20_000, show_progress=False))
        outputs.append((out.read_bytes(), report["removed"], report["kept"]))
    assert outputs[0] == outputs[1]


def test_bad_lines_error_or_are_skipped(tmp_path):
    train = tmp_path / "train.jsonl"
    train.write_bytes(b'{"text": "fine"}\n{"text": 3}\n{broken\n\n{"text": "also fine"}\n')
    test = _jsonl(tmp_path / "test.jsonl", [{"text": "q" * 60}])
    config = DecontaminationConfig(train=str(train), tests=[test], out=str(tmp_path / "o.jsonl"),
                                   report=str(tmp_path / "r.json"), workers=1,
                                   show_progress=False)
    with pytest.raises(ValueError, match="train.jsonl:2: key 'text' must be a string"):
        decontaminate(config)
    assert not (tmp_path / "o.jsonl").exists() and not (tmp_path / "r.json").exists()
    config.skip_bad = True
    report = decontaminate(config)
    assert report["skipped_bad_lines"] == 3 and report["kept"] == 2
    assert len((tmp_path / "o.jsonl").read_text().splitlines()) == 2


def test_cli_on_shipped_data_removes_the_two_leaked_items(tmp_path, capsys):
    paths = asset_paths()
    code = main(["data", "decontaminate", "--train", str(paths["corpus"]), "--test",
                 str(paths["benchmark_test"]), "--test-key", "question", "--out",
                 str(tmp_path / "clean.jsonl"), "--report", str(tmp_path / "report.json"),
                 "--quiet"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["removed"] == 2 and summary["kept"] == 979
    report = json.loads((tmp_path / "report.json").read_text())
    matches = report["test_sets"][str(paths["benchmark_test"])]["matches"]
    assert sorted(m["test_item"] for m in matches) == ["bench-en-001", "bench-ko-004"]


def test_test_sets_with_only_short_items_remove_nothing(tmp_path):
    report, kept = _run(tmp_path, [{"text": _words(random.Random(2), 50)}],
                        [[{"text": "too short"}, {"text": "also short"}]])
    assert report["removed"] == 0 and len(kept) == 1
    assert report["pool"]["unique_windows"] == 0
    assert report["pool"]["test_fields_shorter_than_window"] == 2
