"""The data commands never destroy an input and never replace existing work silently: an
output that is an input (or a folder holding one) is refused before any work, even with
--overwrite; an existing output needs --overwrite. Through the CLI, as a user runs them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from nemo_exaone.cli import main
from nemo_exaone.data.assets import asset_paths, build_tiny_tokenizer


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    return build_tiny_tokenizer(tmp_path_factory.mktemp("tok"))


def _tree(path):
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file()}


def _jsonl(path, texts, key="text"):
    path.write_text("".join(json.dumps({key: t}, ensure_ascii=False) + "\n" for t in texts),
                    encoding="utf-8")
    return path


def _refused(capsys, *argv: str) -> str:
    code = main(["data", *argv, "--quiet"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    return err


def _corpus(tmp_path):
    v = tmp_path / "v"
    v.mkdir()
    corpus = v / "corpus.jsonl"
    corpus.write_bytes(asset_paths()["corpus"].read_bytes())
    (v / "notes.txt").write_text("unrelated work")
    return v, corpus


# ---- train-tokenizer ---------------------------------------------------------------------

@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_train_tokenizer_never_writes_over_the_folder_of_its_input(tmp_path, capsys, overwrite):
    """Reproduction from issue 8: this used to delete ``v`` (corpus and all) and exit 0."""
    v, corpus = _corpus(tmp_path)
    before = _tree(v)
    err = _refused(capsys, "train-tokenizer", "--input", str(corpus), "--output", str(v),
                   "--vocab-size", "300", *overwrite)
    assert f"--output {v} is a folder that holds --input {corpus}" in err
    assert _tree(v) == before


def test_train_tokenizer_needs_overwrite_for_existing_output(tmp_path, capsys):
    v, corpus = _corpus(tmp_path)
    out = tmp_path / "tok"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    err = _refused(capsys, "train-tokenizer", "--input", str(corpus), "--output", str(out),
                   "--vocab-size", "300")
    assert f"--output {out} exists and is not empty" in err and "--overwrite" in err
    assert _tree(out) == {"mine.txt": b"keep"}
    assert main(["data", "train-tokenizer", "--input", str(corpus), "--output", str(out),
                 "--vocab-size", "300", "--overwrite", "--quiet"]) == 0
    assert (out / "tokenizer.json").is_file() and not (out / "mine.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tok", "v"]  # no temporary, no lock


# ---- decontaminate -----------------------------------------------------------------------

def _decontaminate_args(train, test, out, report):
    return ["decontaminate", "--train", str(train), "--test", str(test), "--out", str(out),
            "--report", str(report), "--test-key", "question"]


@pytest.mark.parametrize("case", ["out=train", "report=train", "out=test", "report=test",
                                  "out=report"])
@pytest.mark.parametrize("valid_test_set", [True, False])
def test_decontaminate_refuses_outputs_over_inputs(tmp_path, capsys, case, valid_test_set):
    """Reproduction from issue 8: each of these overwrote an input (or the other output) and
    exited 0. The refusal comes before any work: even before the test set is read."""
    train = tmp_path / "train.jsonl"
    train.write_bytes(asset_paths()["corpus"].read_bytes())
    test = tmp_path / "test.jsonl"
    if valid_test_set:
        test.write_bytes(asset_paths()["benchmark_test"].read_bytes())
    else:
        test.write_text("not json\n")
    paths = {"train": train, "test": test, "report": tmp_path / "report.json"}
    out, report = tmp_path / "clean.jsonl", tmp_path / "report.json"
    target, source = case.split("=")
    if target == "out":
        out = paths[source]
    else:
        report = paths[source]
    before = _tree(tmp_path)
    err = _refused(capsys, *_decontaminate_args(train, test, out, report))
    if source == "report":
        assert "--out and --report are the same path" in err
    else:
        assert f"--{target} {paths[source]} is the same path as --{source}" in err
    assert _tree(tmp_path) == before


def test_decontaminate_needs_overwrite_for_existing_outputs(tmp_path, capsys):
    paths = asset_paths()
    out, report = tmp_path / "clean.jsonl", tmp_path / "report.json"
    args = _decontaminate_args(paths["corpus"], paths["benchmark_test"], out, report)
    report.write_text("an earlier report")
    err = _refused(capsys, *args)
    assert f"--report {report} exists" in err and "--overwrite" in err
    assert not out.exists() and report.read_text() == "an earlier report"
    assert main(["data", *args, "--overwrite", "--quiet"]) == 0
    assert json.loads(report.read_text())["removed"] == 2


# ---- preprocess --------------------------------------------------------------------------

def test_preprocess_refuses_an_output_over_its_input_and_needs_overwrite(tmp_path, capsys,
                                                                         tokenizer_dir):
    odd = _jsonl(tmp_path / "data.idx", ["a document whose file ends in .idx"])
    before = _tree(tmp_path)
    err = _refused(capsys, "preprocess", "--input", str(odd), "--output-prefix",
                   str(tmp_path / "data"), "--tokenizer", str(tokenizer_dir), "--overwrite")
    assert f"--output-prefix {odd} is the same path as --input {odd}" in err
    assert _tree(tmp_path) == before

    data = _jsonl(tmp_path / "train.jsonl", ["one document", "two documents"])
    prefix = tmp_path / "out"
    (tmp_path / "out.idx").write_bytes(b"an older dataset")
    argv = ["preprocess", "--input", str(data), "--output-prefix", str(prefix), "--tokenizer",
            str(tokenizer_dir), "--workers", "0"]
    err = _refused(capsys, *argv)
    assert f"{tmp_path / 'out.idx'} exists" in err and "--overwrite" in err
    assert not (tmp_path / "out.bin").exists()
    assert (tmp_path / "out.idx").read_bytes() == b"an older dataset"
    assert main(["data", *argv, "--overwrite", "--quiet"]) == 0
    assert json.loads((tmp_path / "out.stats.json").read_text())["documents"] == 2


def test_an_inconsistent_dataset_is_not_published(tmp_path, tokenizer_dir, monkeypatch):
    """preprocess checks the finished .bin/.idx against what it wrote before renaming them;
    here the builder loses the last token (as a short write would)."""
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    from nemo_exaone.data import preprocess as module

    data = _jsonl(tmp_path / "train.jsonl", ["one document", "two documents"])
    real_finalize = IndexedDatasetBuilder.finalize

    def short_finalize(self, idx_path):
        real_finalize(self, idx_path)
        bin_path = Path(self.data_file.name)
        os.truncate(bin_path, bin_path.stat().st_size - 1)

    monkeypatch.setattr(IndexedDatasetBuilder, "finalize", short_finalize)
    config = module.PreprocessConfig([str(data)], str(tmp_path / "out"), str(tokenizer_dir),
                                     workers=0, show_progress=False)
    with pytest.raises(RuntimeError, match=r"out: the dataset is inconsistent, not published: "
                                           r"\.bin holds \d+ bytes, \d+ tokens of 2 bytes"):
        module.preprocess(config)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.jsonl"]
