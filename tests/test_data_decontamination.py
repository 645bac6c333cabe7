"""EXAONE-style decontamination: what must be removed, what must never be, collisions."""

from __future__ import annotations

import functools
import json
import random
import string
import unicodedata

import numpy as np
import pytest
import xxhash

from nemo_exaone.cli import main
from nemo_exaone.data.assets import asset_paths
from nemo_exaone.data.decontamination import (
    DecontaminationConfig,
    _codepoints,
    _maybe_present,
    build_window_pool,
    decontaminate,
    normalize_text,
    sample_windows,
    sampled_window_starts,
)
from nemo_exaone.data.decontamination_fastpath import (
    SPECIAL,
    _tables,
    char_table,
    kept_lines,
    normalize_batch,
    parse_jsonl_block,
)
from nemo_exaone.data.jsonl import BadRecordError, LineBlock, decode_record, get_text
from nemo_exaone.data.window_hash import hashes_at, window_hashes

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


def _reference_hash(codepoints, start: int, window: int) -> int:
    """The window hash by its definition: mix(sum c[start+t] * B**(S-1-t) mod 2**64)."""
    value = 0
    for c in codepoints[start: start + window].tolist():
        value = (value * 0x9E3779B97F4A7C15 + c) % 2**64
    return _mix64(value)


def test_window_hash_equals_its_definition_at_every_and_at_chosen_starts():
    codepoints = _codepoints("".join(chr(c) for c in range(0x41, 0x41 + 300)) + "가나다" * 40)
    rng = np.random.default_rng(0)
    for window in (1, 7, 50):
        every = window_hashes(codepoints, window)
        assert len(every) == len(codepoints) - window + 1
        starts = np.sort(rng.integers(0, len(every), 60))
        starts[0], starts[-1] = 0, len(every) - 1
        assert [int(every[i]) for i in starts] == [
            _reference_hash(codepoints, int(i), window) for i in starts]
        assert np.array_equal(hashes_at(codepoints, starts, window), every[starts])
    assert len(window_hashes(codepoints[:10], 50)) == 0


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


# ---- the chunk-at-a-time fast paths equal the simple per-text definitions ----------------

# Characters that exercise every branch of the normalization table: ASCII, Hangul syllables,
# compatibility and conjoining jamo (which compose), combining marks before and after
# letters, canonically composable pairs (e + U+0301, Kannada U+0CBF + U+0CD5), composition
# exclusions (U+0958), full-width forms, no-break and ideographic spaces, multi-character
# case folds (ß, ﬁ, İ), final sigma, ½ ™ ① ² …, astral letters (𝐀, 𠀀) and symbols (😀),
# U+0000 and U+2028.
TRICKY = ("aZ09 .,_-!가힣각ㄱㅏㅋ\u1100\u1161\u11a8e\u0301\u0323\u00e9\u0cbf\u0cd5\u0958"
          "ＡＺ１．\u00a0\u3000ßﬁİΣσς½™①²…𝐀𠀀😀\x00\u2028東京Ǆǅ\u1e9e\u0345ά")


def _reference_normalize(text: str) -> str:
    """The definition, independently of the package: NFKC, casefold, letters/digits."""
    return "".join(c for c in unicodedata.normalize("NFKC", text).casefold() if c.isalnum())


def _random_text(rng: random.Random, size: int) -> str:
    pools = (TRICKY, ALPHABET + " ", string.printable)
    return "".join(rng.choice(rng.choice(pools)) for _ in range(size))


def test_char_table_agrees_with_the_definition_for_every_code_point():
    table = char_table()
    for cp in range(0x110000):
        value = int(table[cp])
        if value == SPECIAL:
            continue
        expected = _reference_normalize(chr(cp))
        assert expected == (chr(value) if value else ""), hex(cp)


def test_char_table_values_hold_in_any_context():
    """Strings of characters the table decides normalize character by character (random
    strings over all of them, so neighbours of every kind meet)."""
    table = char_table()
    decided = np.flatnonzero((table != SPECIAL) & (table != 0))
    dropped = np.flatnonzero(table == 0)
    rng = np.random.default_rng(0)
    for _ in range(300):
        cps = np.where(rng.random(200) < 0.7, rng.choice(decided, 200), rng.choice(dropped, 200))
        cps = cps[(cps < 0xD800) | (cps > 0xDFFF)]
        text = "".join(map(chr, cps.tolist()))
        by_table = "".join(chr(v) for v in table[cps].tolist() if v)
        assert _reference_normalize(text) == by_table


def test_char_table_leaves_every_canonical_composition_to_the_per_text_path():
    table = char_table()
    pairs = ["\u1100\u1161", "\u1100\u1161\u11a8", "가\u11a8", "ㄱㅏ", "\u0cbf\u0cd5"]
    for cp in range(0x110000):
        parts = unicodedata.decomposition(chr(cp)).split()
        if len(parts) == 2 and not parts[0].startswith("<"):
            pairs.append(chr(int(parts[0], 16)) + chr(int(parts[1], 16)))
    for pair in pairs:
        values = table[[ord(c) for c in pair]].tolist()
        if SPECIAL not in values:
            assert _reference_normalize(pair) == "".join(chr(v) for v in values if v), pair
        codepoints, starts, lengths = normalize_batch(["x" + pair + "y", pair])
        assert codepoints.astype("<u4").tobytes().decode("utf-32-le") == "".join(
            _reference_normalize(t) for t in ("x" + pair + "y", pair))


def test_safe_starts_never_compose_or_reorder_with_what_precedes_them():
    """normalize_batch normalizes an undecided character marked a safe start apart from
    what precedes it: NFKC(x + c) must be NFKC(x) + NFKC(c) for every x that could compose
    with something (every first half of a canonical composition, Hangul L and LV, and
    combining marks that could be reordered)."""
    table, safe_start = _tables()
    before = {chr(int(parts[0], 16)) for parts in (
        unicodedata.decomposition(chr(cp)).split() for cp in range(0x110000))
        if len(parts) == 2 and not parts[0].startswith("<")}
    before |= set(TRICKY) | {"\u1100", "가", "\u0301", "\u0323", "\u05b0"}
    undecided_safe = [chr(cp) for cp in np.flatnonzero((table == SPECIAL) & safe_start)]
    assert len(undecided_safe) > 1000
    nfkc = functools.partial(unicodedata.normalize, "NFKC")
    for c in undecided_safe:
        for x in before:
            assert nfkc(x + c) == nfkc(x) + nfkc(c), (x, c)


@pytest.mark.parametrize("seed", range(10))
def test_batch_normalization_equals_per_text_normalization(seed):
    rng = random.Random(seed)
    texts = [_random_text(rng, rng.choice([0, 1, 3, 20, 200])) for _ in range(300)]
    texts += ["", "ASCII only, Mixed Case 123", "한국어 문장입니다.", "ㅋㅋㅋ ㄱㅏ"]
    codepoints, starts, lengths = normalize_batch(texts)
    for i, text in enumerate(texts):
        got = codepoints[starts[i]: starts[i] + lengths[i]].astype("<u4").tobytes()
        assert got.decode("utf-32-le") == _reference_normalize(text) == normalize_text(text)


def _mix64(value: int) -> int:
    value ^= value >> 30
    value = value * 0xBF58476D1CE4E5B9 & (2**64 - 1)
    value ^= value >> 27
    value = value * 0x94D049BB133111EB & (2**64 - 1)
    return value ^ value >> 31


def _reference_starts(norm: str, window: int, samples: int, seed: int) -> list[int]:
    """Stratified sampling, one example at a time, in plain Python integers."""
    count = len(norm) - window + 1
    if count <= 0:
        return []
    if samples == 0 or count <= samples:
        return list(range(count))
    key = xxhash.xxh3_64_intdigest(norm.encode("utf-32-le"), seed=seed)
    starts = []
    for k in range(samples):
        low = k * count // samples
        width = (k + 1) * count // samples - low
        starts.append(low + _mix64((key + (k + 1) * 0x9E3779B97F4A7C15) % 2**64) % width)
    return starts


@pytest.mark.parametrize("samples", [0, 1, 10])
def test_sampling_equals_the_per_example_reference(samples):
    rng = random.Random(samples)
    texts = [_random_text(rng, rng.randint(0, 400)) for _ in range(200)]
    texts += ["a" * n for n in (0, 49, 50, 55, 59, 60, 61)]
    norms = [_reference_normalize(text) for text in texts]
    keys = np.array([xxhash.xxh3_64_intdigest(n.encode("utf-32-le"), seed=5) for n in norms],
                    dtype=np.uint64)
    owners, starts = sample_windows(np.array([len(n) for n in norms]), keys, 50, samples)
    expected = [(i, s) for i, n in enumerate(norms) for s in _reference_starts(n, 50, samples, 5)]
    assert list(zip(owners.tolist(), starts.tolist())) == expected
    for text, norm in zip(texts[:20], norms):
        assert sampled_window_starts(text, 50, samples, seed=5) == _reference_starts(
            norm, 50, samples, 5)


BAD_LINES = [b"", b"   ", b"{broken", b'{"text": 3}', b'{"other": "x"}', b"[1, 2]", b'"text"',
             b'{"text": "a"} trailing', b'  {"text": "leading space"}', b'{"text": "trailing"}  ',
             b'{"text": "\\u00e9 \\ud55c \\n escaped"}', b'{"text": "bad \xff utf8"}',
             b'{"text": ["a"]}', b'{"text": "x", "text": "dup"}', b'{"a": [', b'1]}',
             b'{"text": "ok", "id": 12345678901234567890123}', b'{"text": NaN}',
             b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[", b'{"text": "\xef\xbb\xbfbom inside"}',
             # unpaired surrogates are bad; a pair, or an escaped backslash before "ud800", is not
             b'{"text": "lone \\ud800 high"}', b'{"text": "\\uDC00 low"}',
             b'{"text": "pair \\ud83d\\ude00 fine"}', b'{"text": "not one: \\\\ud800"}']


def _random_block_data(rng: random.Random, lines: int) -> bytes:
    out = []
    for i in range(lines):
        if rng.random() < 0.3:
            out.append(rng.choice(BAD_LINES))
        else:
            record = {"id": i, "text": _random_text(rng, rng.randint(0, 80))}
            out.append(json.dumps(record, ensure_ascii=rng.random() < 0.5).encode("utf-8"))
    sep = b"\r\n" if rng.random() < 0.1 else b"\n"
    data = sep.join(out) + (sep if rng.random() < 0.8 else b"")
    return (b"\xef\xbb\xbf" if rng.random() < 0.1 else b"") + data


@pytest.mark.parametrize("seed", range(30))
def test_block_parsing_equals_line_by_line_parsing(seed):
    rng = random.Random(seed)
    block = LineBlock("t.jsonl", rng.choice([1, 1, 17]), _random_block_data(rng, 40))
    expected_texts, expected_positions, expected_errors, record_bytes = [], [], [], 0
    lines = block.lines()
    for position, (line_no, raw) in enumerate(lines):
        try:
            record = decode_record(raw, "t.jsonl", line_no)
            expected_texts.append(get_text(record, "text", "t.jsonl", line_no))
        except BadRecordError as err:
            expected_errors.append((err.path, err.line_no, err.reason))
            continue
        expected_positions.append(position)
        record_bytes += len(raw)
    parsed = parse_jsonl_block(block, "t.jsonl", "text")
    assert parsed.texts == expected_texts and parsed.positions == expected_positions
    assert parsed.errors == expected_errors
    assert parsed.line_count == len(lines) and parsed.record_bytes == record_bytes
    drop = sorted(rng.sample(range(len(lines)), rng.randint(0, len(lines))))
    assert kept_lines(block, len(lines), drop) == b"".join(
        raw + b"\n" for position, (_, raw) in enumerate(lines) if position not in drop)


def test_block_parsing_never_reads_a_bad_line_into_the_next():
    """Alone, each "[" * 600 line is malformed JSON; scanned on into the next one it is
    too deep for the json module: the error must still be the line's own."""
    data = b"[" * 600 + b"\n" + b"[" * 600 + b"\n" + b'{"a": \n1}\n{"text": "fine"}\n'
    parsed = parse_jsonl_block(LineBlock("t.jsonl", 1, data), "t.jsonl", "text")
    assert parsed.texts == ["fine"] and parsed.positions == [4]
    assert [(line, reason.split(" (")[0]) for _, line, reason in parsed.errors] == [
        (1, "malformed JSON"), (2, "malformed JSON"), (3, "malformed JSON"),
        (4, "malformed JSON")]


def _reference_decontaminate(train: bytes, tests: list[list[dict]], paths: list[str],
                             window: int, samples: int, seed: int, min_item_chars: int):
    """Kept bytes, removed (id, test set, test item, matched text, kind) and bad line numbers,
    computed one line at a time with Python strings, a dict of test windows and a dict of
    the test fields matched whole (first match by position, then by test order)."""
    pool: dict[str, tuple[str, object]] = {}
    whole: dict[str, tuple[str, object]] = {}
    for path, items in zip(paths, tests):
        for line_no, item in enumerate(items, start=1):
            item_id = item["id"] if isinstance(item.get("id"), (str, int)) else f"{path}:{line_no}"
            norm = _reference_normalize(item["text"])
            for start in range(len(norm) - window + 1):
                pool.setdefault(norm[start: start + window], (path, item_id))
            if min_item_chars and min_item_chars <= len(norm) < window:
                whole.setdefault(norm, (path, item_id))
    kept, removed, bad, short = [], [], [], 0
    for line_no, raw in LineBlock("train", 1, train).lines():
        try:
            record = decode_record(raw, "train", line_no)
            text = get_text(record, "text", "train", line_no)
        except BadRecordError:
            bad.append(line_no)
            continue
        norm = _reference_normalize(text)
        record_id = record.get("id")
        record_id = record_id if isinstance(record_id, (str, int)) else f"line:{line_no}"
        match = None
        for start in _reference_starts(norm, window, samples, seed):
            if norm[start: start + window] in pool:
                path, item_id = pool[norm[start: start + window]]
                match = (record_id, path, item_id, norm[start: start + window], "window")
                break
        if match is None:
            found = [(norm.find(item), order, item) for order, item in enumerate(whole)]
            found = sorted(f for f in found if f[0] >= 0)
            if found:
                item = found[0][2]
                match = (record_id, *whole[item], item, "whole_item")
        if match is None:
            short += len(norm) < window
            kept.append(raw + b"\n")
        else:
            removed.append(match)
    return b"".join(kept), removed, bad, short


@pytest.mark.parametrize("seed", range(6))
def test_decontamination_equals_a_line_by_line_reference(tmp_path, seed):
    rng = random.Random(seed)
    window, samples = rng.choice([(50, 10), (20, 3), (12, 0)])
    min_item_chars = [0, 20, 6][seed % 3]  # strict published method, default, short keys
    tests = [[{"id": f"s{s}-{i}", "text": _random_text(rng, rng.randint(5, 150))}
              for i in range(rng.randint(1, 30))] for s in range(2)]
    tests[0].append({"text": tests[1][0]["text"]})  # a window in two sets: the first one wins
    lines = []
    for i in range(300):
        roll = rng.random()
        if roll < 0.05:
            lines.append(rng.choice(BAD_LINES))
            continue
        text = _random_text(rng, rng.randint(0, 300))
        if roll < 0.3:  # a leaked test item, re-cased, inside other text
            leak = rng.choice(rng.choice(tests))["text"]
            cut = rng.randint(0, len(text))
            text = text[:cut] + (leak.upper() if rng.random() < 0.5 else leak) + text[cut:]
        record = {"text": text} if rng.random() < 0.1 else {"id": f"r{i}", "text": text}
        lines.append(json.dumps(record, ensure_ascii=rng.random() < 0.3).encode("utf-8"))
    train_bytes = b"\n".join(lines) + b"\n"
    (tmp_path / "train.jsonl").write_bytes(train_bytes)
    paths = [_jsonl(tmp_path / f"test{s}.jsonl", items) for s, items in enumerate(tests)]
    kept, removed, bad, short = _reference_decontaminate(train_bytes, tests, paths, window,
                                                         samples, seed, min_item_chars)
    assert removed and bad  # the data exercises both
    by_item = sum(r[-1] == "whole_item" for r in removed)
    for workers, chunk_bytes in ((0, 1 << 20), (0, 700), (2, 3000)):
        report = decontaminate(DecontaminationConfig(
            train=str(tmp_path / "train.jsonl"), tests=paths, out=str(tmp_path / "o.jsonl"),
            report=str(tmp_path / "r.json"), window=window, samples=samples, seed=seed,
            min_item_chars=min_item_chars, workers=workers, chunk_bytes=chunk_bytes,
            skip_bad=True, show_progress=False, overwrite=True))
        assert (tmp_path / "o.jsonl").read_bytes() == kept
        got = sorted((m["id"], path, m["test_item"],
                      m.get("matched_window", m.get("matched_item")), m["match"])
                     for path, entry in report["test_sets"].items() for m in entry["matches"])
        assert got == sorted(removed)
        assert report["removed"] == len(removed) and report["skipped_bad_lines"] == len(bad)
        assert report["removed_by_whole_item"] == by_item
        assert report["kept_shorter_than_window"] == short
        assert report["kept"] == 300 - len(bad) - len(removed)


def test_workers_read_their_blocks_from_the_file_including_bom_and_crlf(tmp_path):
    rng = random.Random(3)
    items = [{"id": f"t{i}", "text": _words(rng, 30)} for i in range(5)]
    records = [{"id": i, "text": items[i % 5]["text"] if i % 7 == 0 else _words(rng, 40)}
               for i in range(200)]
    lines = [json.dumps(r, ensure_ascii=False).encode("utf-8") for r in records]
    lines[50] = b'{"text": 3}'
    train = tmp_path / "train.jsonl"
    train.write_bytes(b"\xef\xbb\xbf" + b"\r\n".join(lines))  # no final line end either
    test = _jsonl(tmp_path / "test.jsonl", items)
    outputs = []
    for workers in (0, 1, 2):
        out = tmp_path / f"o{workers}.jsonl"
        report = decontaminate(DecontaminationConfig(
            train=str(train), tests=[test], out=str(out), report=str(tmp_path / "r.json"),
            workers=workers, chunk_bytes=997, skip_bad=True, show_progress=False,
            overwrite=True))
        outputs.append((out.read_bytes(), report["test_sets"], report["bad_line_examples"]))
    assert outputs[0] == outputs[1] == outputs[2]
    assert outputs[0][2] == [f"{train}:51: key 'text' must be a string, got int"]
    assert outputs[0][0].count(b"\n") == 200 - 1 - 29 and b"\r" not in outputs[0][0]


def test_prefilter_never_rules_out_a_pool_window_and_rules_out_most_others(tmp_path):
    items = [{"text": _words(random.Random(i), 60)} for i in range(50)]
    pool = build_window_pool([_jsonl(tmp_path / "t.jsonl", items)], ["text"])
    assert np.array_equal(_maybe_present(pool.prefilter, pool.hashes), np.arange(len(pool)))
    others = np.random.default_rng(0).integers(0, 2**64 - 1, 100_000, dtype=np.uint64)
    assert len(_maybe_present(pool.prefilter, others)) < 0.07 * len(others)  # 16-32 bits per window
    assert pool.nbytes >= pool.prefilter.nbytes >= 2 * len(pool)


# ---- whole-item matching: short dense test items ------------------------------------------

KOREAN_43 = "대한민국의 수도는 서울이며, 가장 큰 도시이고 인구는 약 천만 명에 이르는 세계적인 대도시입니다. 맞나요?"
KOREAN_20 = "서울의 남산타워는 몇 년도에 처음 세워졌을까요?"
KOREAN_19 = "서울의 남산타워는 몇 년에 처음 세워졌을까요?"


def _decontaminate_cli(tmp_path, capsys, train, tests, *flags):
    train_path = _jsonl(tmp_path / "train.jsonl", train)
    test_path = _jsonl(tmp_path / "test.jsonl", tests)
    code = main(["data", "decontaminate", "--train", train_path, "--test", test_path, "--out",
                 str(tmp_path / "clean.jsonl"), "--report", str(tmp_path / "report.json"),
                 "--quiet", "--overwrite", *flags])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    report = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    kept = [json.loads(line)["id"] for line in (tmp_path / "clean.jsonl").read_text().splitlines()]
    return summary, report, kept, test_path


def test_short_dense_korean_item_copied_into_training_is_caught_by_default(tmp_path, capsys):
    """43 Hangul syllables: no 50-character window, so the published method never sees it."""
    assert len(normalize_text(KOREAN_43)) == 43
    rng = random.Random(0)
    document = f"{_words(rng, 40)} {KOREAN_43} {_words(rng, 40)}"
    train = [{"id": "leaky", "text": document}, {"id": "clean", "text": _words(rng, 80)},
             {"id": "exact", "text": KOREAN_43}]
    tests = [{"id": "q1", "question": KOREAN_43}]
    summary, report, kept, test_path = _decontaminate_cli(
        tmp_path, capsys, train, tests, "--test-key", "question")
    assert kept == ["clean"]
    assert summary["removed"] == summary["removed_by_whole_item"] == 2
    assert summary["removed_by_window"] == 0 and report["kept_shorter_than_window"] == 0
    matches = report["test_sets"][test_path]["matches"]
    assert [(m["id"], m["match"], m["test_item"], m["matched_item"]) for m in matches] == [
        ("leaky", "whole_item", "q1", normalize_text(KOREAN_43)),
        ("exact", "whole_item", "q1", normalize_text(KOREAN_43))]
    assert report["test_sets"][test_path]["removed_by_whole_item"] == 2
    assert report["params"]["min_item_chars"] == 20
    assert report["pool"]["test_fields_matched_whole"] == 1

    summary, report, kept, _ = _decontaminate_cli(
        tmp_path, capsys, train, tests, "--test-key", "question", "--strict-published")
    assert kept == ["leaky", "clean", "exact"] and summary["removed"] == 0
    assert report["params"]["min_item_chars"] == 0
    assert summary["method"] == "published (windows only)"


def test_whole_item_threshold_and_no_partial_or_cross_example_match(tmp_path, capsys):
    assert len(normalize_text(KOREAN_20)) == 20 and len(normalize_text(KOREAN_19)) == 19
    rng = random.Random(1)
    norm_43 = normalize_text(KOREAN_43)
    train = [
        {"id": "has20", "text": f"{_words(rng, 30)} {KOREAN_20} {_words(rng, 30)}"},
        {"id": "has19", "text": f"{_words(rng, 30)} {KOREAN_19} {_words(rng, 30)}"},
        {"id": "first_half", "text": f"{_words(rng, 30)} {norm_43[:30]}"},  # item cut short
        {"id": "second_half", "text": f"{norm_43[30:]} {_words(rng, 30)}"},  # ... continued
    ]
    tests = [{"id": "q20", "text": KOREAN_20}, {"id": "q19", "text": KOREAN_19},
             {"id": "q43", "text": KOREAN_43}]
    summary, report, kept, _ = _decontaminate_cli(tmp_path, capsys, train, tests)
    assert kept == ["has19", "first_half", "second_half"]
    assert summary["removed_by_whole_item"] == 1
    # a lower threshold takes the 19-character item too
    summary, _, kept, _ = _decontaminate_cli(tmp_path, capsys, train, tests,
                                             "--min-item-chars", "19")
    assert kept == ["first_half", "second_half"] and summary["removed_by_whole_item"] == 2


def test_whole_items_are_found_at_every_alignment(tmp_path):
    """Only every stride-th position is looked up: an item must be found whatever its offset
    modulo the stride, at the start, middle or end of an example, at the minimum length."""
    rng = random.Random(7)
    items = ["".join(rng.choice(string.ascii_lowercase) for _ in range(n)) for n in (20, 33, 49)]
    train = []
    for k, item in enumerate(items):
        for shift in range(20):
            filler = "".join(str((shift * 3 + j) % 10) for j in range(shift))
            text = (filler + item + "7" * (k + 1)) if shift % 2 else (filler + item)
            train.append({"id": f"{k}-{shift}", "text": text})
    train.append({"id": "clean", "text": items[0][:19] + "0" + items[1][1:]})
    report, kept = _run(tmp_path, train, [[{"text": item} for item in items]])
    assert [r["id"] for r in kept] == ["clean"]
    assert report["removed"] == report["removed_by_whole_item"] == 60
