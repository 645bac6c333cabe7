"""``nemo-exaone data``: every sub-command documents its options; small commands run."""

from __future__ import annotations

import json

import pytest

from nemo_exaone.cli import main
from nemo_exaone.data.assets import asset_paths

# What each sub-command's help must explain: its options and the defaults users rely on.
HELP_CONTENT = {
    "train-tokenizer": ["--input", "--output", "--vocab-size", "--overwrite", "--skip-bad"],
    "preprocess": ["--input", "--output-prefix", "--tokenizer", "--mode", "--append-eod",
                   "--overwrite"],
    "decontaminate": ["--train", "--test", "--out", "--report", "--window", "default 50",
                      "--samples", "default 10", "--strict-published", "--overwrite"],
    "blend": ["--data", "--weights", "--replay", "--replay-fraction"],
    "tiny-tokenizer": ["--cache-dir", "--vocab-size"],
    "assets": ["paths of the data files shipped with the package"],
    "render-chat": ["messages", "--generation-prompt", "EXAONE 3.x"],
}
SUBCOMMANDS = list(HELP_CONTENT)


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_help_explains_every_subcommand(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["data", name, "--help"])
    assert exit_info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines anywhere
    assert out.startswith(f"usage: nemo-exaone data {name}")
    missing = [text for text in HELP_CONTENT[name] if text not in out]
    assert not missing, f"'data {name} --help' does not mention {missing}"


def test_assets_and_render_chat(tmp_path, capsys):
    assert main(["data", "assets"]) == 0
    paths = json.loads(capsys.readouterr().out)
    assert set(paths) == set(asset_paths())
    conversation = tmp_path / "chat.json"
    conversation.write_text(json.dumps([{"role": "user", "content": "안녕?"}]), encoding="utf-8")
    assert main(["data", "render-chat", str(conversation), "--generation-prompt"]) == 0
    assert capsys.readouterr().out == "[|system|][|endofturn|]\n[|user|]안녕?\n[|assistant|]"


def test_train_tokenizer_tiny_tokenizer_and_blend(tmp_path, capsys):
    corpus = asset_paths()["corpus"]
    assert main(["data", "train-tokenizer", "--input", str(corpus), "--output",
                 str(tmp_path / "tok"), "--vocab-size", "600", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["vocab_size"] == 600
    assert main(["data", "tiny-tokenizer", "--cache-dir", str(tmp_path / "cache")]) == 0
    tiny = capsys.readouterr().out.strip()
    for name, lines in (("x", 40), ("y", 10)):
        data = tmp_path / f"{name}.jsonl"
        data.write_text("\n".join(corpus.read_text(encoding="utf-8").splitlines()[:lines]) + "\n",
                        encoding="utf-8")
        assert main(["data", "preprocess", "--input", str(data), "--output-prefix",
                     str(tmp_path / name), "--tokenizer", tiny, "--quiet", "--workers", "0"]) == 0
    capsys.readouterr()
    assert main(["data", "blend", "--data", str(tmp_path / "x"), "--replay", str(tmp_path / "y"),
                 "--replay-fraction", "0.2"]) == 0
    blend = json.loads(capsys.readouterr().out)
    assert blend["weights"] == pytest.approx([0.8, 0.2])
    assert blend["megatron_data_path"][1] == str(tmp_path / "x")


def test_missing_morphological_analyser_is_a_clean_error(tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "mecab", None)
    code = main(["data", "train-tokenizer", "--input", str(asset_paths()["corpus"]),
                 "--output", str(tmp_path / "tok"), "--morph", "mecab", "--quiet"])
    assert code == 2
    assert "pip install python-mecab-ko" in capsys.readouterr().err
    assert not (tmp_path / "tok").exists()
