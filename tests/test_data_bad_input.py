"""Bad input gets the same treatment in every data command: ``file:line: reason`` and exit 2,
or skipped and counted with --skip-bad; an empty test set or corpus is refused naming the
file. Through the CLI, as a user runs them; nothing is published when a run is refused."""

from __future__ import annotations

import json

import pytest

from nemo_exaone.cli import main
from nemo_exaone.data.assets import asset_paths, build_tiny_tokenizer

# Valid JSON (json.dumps writes it as the escape \ud800), but not text: every encoder rejects
# it (UTF-8 output, the tokenizer, UTF-32 in normalization).
SURROGATE = "half of a pair: \ud800 here"
REASON = "key 'text' holds an unpaired surrogate (U+D800 at character 16), which is not text"


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    return build_tiny_tokenizer(tmp_path_factory.mktemp("tok"))


def _lines(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="ascii")
    return path


def _words(n: int, offset: int = 0) -> str:
    return " ".join(f"단어{i}word{i}" for i in range(offset, offset + n))


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["data", *argv, "--quiet"])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.out, captured.err


def _outputs(tmp_path, *inputs) -> list[str]:
    names = {p.name for p in inputs}
    return sorted(p.name for p in tmp_path.iterdir() if p.name not in names)


# ---- unpaired surrogates ------------------------------------------------------------------

@pytest.mark.parametrize("workers", ["0", "1"])
def test_decontaminate_surrogate_in_training_data(tmp_path, capsys, workers):
    train = _lines(tmp_path / "train.jsonl", [{"text": _words(30)}, {"text": SURROGATE},
                                              {"text": _words(30, 100)}])
    test = _lines(tmp_path / "test.jsonl", [{"text": _words(30)}])
    argv = ["decontaminate", "--train", str(train), "--test", str(test), "--out",
            str(tmp_path / "clean.jsonl"), "--report", str(tmp_path / "report.json"),
            "--workers", workers]
    code, _, err = _run(capsys, *argv)
    assert code == 2 and f"{train}:2: {REASON}" in err
    assert _outputs(tmp_path, train, test) == []
    code, out, _ = _run(capsys, *argv, "--skip-bad")
    summary = json.loads(out)
    assert code == 0 and summary["skipped_bad_lines"] == 1
    assert summary["removed"] == 1 and summary["kept"] == 1
    report = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    assert report["bad_line_examples"] == [f"{train}:2: {REASON}"]


def test_decontaminate_surrogate_in_test_set_and_in_an_id(tmp_path, capsys):
    train = _lines(tmp_path / "train.jsonl", [{"id": "x\udfff", "text": _words(30)}])
    test = _lines(tmp_path / "test.jsonl", [
        {"text": _words(30)}, {"text": SURROGATE}, {"text": ["option", "\udc80"]}])
    argv = ["decontaminate", "--train", str(train), "--test", str(test), "--out",
            str(tmp_path / "clean.jsonl"), "--report", str(tmp_path / "report.json")]
    code, _, err = _run(capsys, *argv)
    assert code == 2 and f"{test}:2: {REASON}" in err
    code, out, _ = _run(capsys, *argv, "--skip-bad")
    assert code == 0 and json.loads(out)["removed"] == 1
    report = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    assert report["skipped_bad_test_lines"] == 2
    # the removed example's id is not text either: it is named by its line instead
    assert report["test_sets"][str(test)]["removed_ids"] == ["line:1"]


def test_train_tokenizer_surrogate(tmp_path, capsys):
    corpus = _lines(tmp_path / "corpus.jsonl", [{"text": _words(40)}, {"text": SURROGATE}])
    argv = ["train-tokenizer", "--input", str(corpus), "--output", str(tmp_path / "tok"),
            "--vocab-size", "300"]
    code, _, err = _run(capsys, *argv)
    assert code == 2 and f"{corpus}:2: {REASON}" in err
    assert _outputs(tmp_path, corpus) == []
    code, out, _ = _run(capsys, *argv, "--skip-bad")
    report = json.loads(out)
    assert code == 0 and report["skipped_bad_lines"] == 1 and report["documents"] == 1


@pytest.mark.parametrize("workers", ["0", "1"])
def test_preprocess_surrogate_in_text_and_chat(tmp_path, capsys, tokenizer_dir, workers):
    text = _lines(tmp_path / "text.jsonl", [{"text": "fine"}, {"text": SURROGATE}])
    chat = _lines(tmp_path / "chat.jsonl", [
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]},
        {"messages": [{"role": "user", "content": "\ud800"}]}])
    for data, mode, reason in (
            (text, "text", REASON),
            (chat, "chat", "messages[0].content holds an unpaired surrogate (U+D800")):
        argv = ["preprocess", "--input", str(data), "--output-prefix", str(tmp_path / mode),
                "--tokenizer", str(tokenizer_dir), "--mode", mode, "--workers", workers]
        code, _, err = _run(capsys, *argv)
        assert code == 2 and f"{data}:2: {reason}" in err
        assert _outputs(tmp_path, text, chat) == []
        code, out, _ = _run(capsys, *argv, "--skip-bad")
        result = json.loads(out)
        assert code == 0 and result["skipped_bad_lines"] == 1 and result["documents"] == 1
        for path in tmp_path.iterdir():
            if path not in (text, chat):
                path.unlink()


# ---- empty inputs -------------------------------------------------------------------------

def test_empty_test_set_is_refused_naming_the_file(tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    bad_only = _lines(tmp_path / "bad_only.jsonl", [{"text": "no question key"}])
    corpus = asset_paths()["corpus"]
    for test, extra in ((empty, []), (bad_only, ["--skip-bad"])):
        code, _, err = _run(capsys, "decontaminate", "--train", str(corpus), "--test",
                            str(asset_paths()["benchmark_test"]), "--test", str(test),
                            "--test-key", "question", "--out", str(tmp_path / "clean.jsonl"),
                            "--report", str(tmp_path / "report.json"), *extra)
        if test == bad_only:  # its lines lack the key; skipped, it is empty
            assert code == 2 and f"{test}: empty test set (no usable items, every line" in err
        else:
            assert code == 2 and f"{test}: empty test set" in err
        assert not (tmp_path / "clean.jsonl").exists()


def test_empty_corpus_is_refused_naming_the_file(tmp_path, capsys, tokenizer_dir):
    full = _lines(tmp_path / "full.jsonl", [{"text": _words(40)}])
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n" * 0)
    inputs = (full, empty)
    code, _, err = _run(capsys, "train-tokenizer", "--input", str(full), "--input", str(empty),
                        "--output", str(tmp_path / "tok"), "--vocab-size", "300")
    assert code == 2 and f"{empty}: empty corpus" in err
    code, _, err = _run(capsys, "preprocess", "--input", str(full), "--input", str(empty),
                        "--output-prefix", str(tmp_path / "ds"), "--tokenizer",
                        str(tokenizer_dir))
    assert code == 2 and f"{empty}: empty corpus" in err
    code, _, err = _run(capsys, "decontaminate", "--train", str(empty), "--test", str(full),
                        "--out", str(tmp_path / "clean.jsonl"), "--report",
                        str(tmp_path / "report.json"))
    assert code == 2 and f"{empty}: no training examples" in err
    assert _outputs(tmp_path, *inputs) == []  # no tokenizer, dataset or report published
