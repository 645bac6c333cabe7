"""Tokenizer training and loading: exact round trips (Korean included), HF compatibility."""

from __future__ import annotations

import json
import random
import shutil
import sys

import pytest

from nemo_exaone.data.assets import build_tiny_tokenizer
from nemo_exaone.data.morphology import load_morpheme_splitter
from nemo_exaone.data.tokenizer import EOT_TOKEN, SPECIAL_TOKENS, load_tokenizer
from nemo_exaone.data.tokenizer_training import (
    TokenizerTrainingConfig,
    train_tokenizer,
    train_tokenizer_from_texts,
)

SAMPLES = [
    "서울의 겨울은 춥고 건조하다. 붕어빵 한 봉지를 사서 집에 간다.",
    "The river that runs through the old town freezes only in the coldest winters.",
    "EXAONE은 LG AI연구원의 모델입니다! 😀 mixed 한국어 and English, tabs\tand\nnewlines",
    "  leading and trailing spaces  ",
    "[|endofturn|] literal special token inside text",
    "",
]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    return build_tiny_tokenizer(tmp_path_factory.mktemp("tok"))


def test_round_trip_including_korean(tokenizer_dir):
    tokenizer = load_tokenizer(tokenizer_dir)
    assert tokenizer.vocab_size == 1024
    for text in SAMPLES:
        assert tokenizer.decode(tokenizer.encode(text)) == text


def _random_text(rng: random.Random) -> str:
    """Random mixes of ASCII, Hangul, whitespace, emoji and arbitrary code points."""
    pools = [(0x20, 0x7E), (0xAC00, 0xD7A3), (0x1100, 0x11FF), (0x1F600, 0x1F64F),
             (0x0, 0xD7FF), (0xE000, 0x10FFFF)]
    chars = []
    for _ in range(rng.randint(0, 80)):
        low, high = rng.choice(pools)
        chars.append(rng.choice(" \n\t") if rng.random() < 0.1 else chr(rng.randint(low, high)))
    return "".join(chars)


@pytest.mark.parametrize("seed", range(8))
def test_round_trip_random_unicode(tokenizer_dir, seed):
    tokenizer = load_tokenizer(tokenizer_dir)
    rng = random.Random(seed)
    for _ in range(25):
        text = _random_text(rng)
        assert tokenizer.decode(tokenizer.encode(text)) == text


def test_special_tokens_and_no_bos(tokenizer_dir):
    tokenizer = load_tokenizer(tokenizer_dir)
    ids = {tok: tokenizer.token_to_id(tok) for tok in SPECIAL_TOKENS}
    assert None not in ids.values()
    assert tokenizer.eod_id == ids[EOT_TOKEN] and tokenizer.pad_id == ids["[PAD]"]
    assert tokenizer.encode("[|endofturn|]") == [tokenizer.eot_id]
    assert tokenizer.bos_id not in tokenizer.encode("hello")  # EXAONE prepends no BOS
    # role tags are plain text: several ordinary tokens, not a special token
    assert len(tokenizer.encode("[|assistant|]")) > 1


def test_auto_tokenizer_loads_and_agrees(tokenizer_dir):
    transformers = pytest.importorskip("transformers")
    auto = transformers.AutoTokenizer.from_pretrained(str(tokenizer_dir))
    tokenizer = load_tokenizer(tokenizer_dir)
    assert auto.eos_token == EOT_TOKEN and auto.eos_token_id == tokenizer.eot_id
    assert auto.pad_token_id == tokenizer.pad_id
    for text in SAMPLES:
        ids = auto(text, add_special_tokens=True)["input_ids"]
        assert ids == tokenizer.encode(text)
        assert auto.decode(ids) == text


def test_vocab_and_merges_layout_loads_identically(tokenizer_dir, tmp_path):
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        shutil.copy(tokenizer_dir / name, tmp_path / name)
    from_pair = load_tokenizer(tmp_path)
    from_json = load_tokenizer(tokenizer_dir)
    assert from_pair.eot_id == from_json.eot_id
    for text in SAMPLES:
        assert from_pair.encode(text) == from_json.encode(text)
        assert from_pair.decode(from_pair.encode(text)) == text


def test_missing_tokenizer_files_are_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        load_tokenizer(tmp_path)


@pytest.mark.parametrize("analyser", ["mecab", "kiwi"])
def test_morpheme_pretokenization_keeps_round_trip(analyser, tmp_path):
    pytest.importorskip({"mecab": "mecab", "kiwi": "kiwipiepy"}[analyser])
    texts = [s for s in SAMPLES if s] * 30
    out = train_tokenizer_from_texts(texts, tmp_path / analyser, vocab_size=400,
                                     morph_analyzer=analyser)
    tokenizer = load_tokenizer(out)
    for text in SAMPLES:
        assert tokenizer.decode(tokenizer.encode(text)) == text
    pieces = [tokenizer.backend.id_to_token(i) for i in tokenizer.encode("학교에 갔다")]
    # merges were learned on morphemes: the noun and its particle stay separate tokens
    assert tokenizer.decode(tokenizer.encode("학교에")) == "학교에" and len(pieces) >= 3


def test_morpheme_cut_points_stay_inside_korean_words():
    pytest.importorskip("mecab")
    splitter = load_morpheme_splitter("mecab")
    text = "나는 학교에 갔다. EXAONE은 test"
    cuts = splitter.cut_points(text)
    assert 5 in cuts  # 학교|에
    assert all(not text[c - 1].isspace() and not text[c].isspace() for c in cuts)


def test_missing_analyser_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "kiwipiepy", None)  # makes `import kiwipiepy` fail
    with pytest.raises(ValueError, match="pip install kiwipiepy"):
        load_morpheme_splitter("kiwi")
    with pytest.raises(ValueError, match="unknown"):
        load_morpheme_splitter("spacy")


def test_train_tokenizer_from_jsonl_reports_bad_lines(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    good = [json.dumps({"text": s}, ensure_ascii=False) for s in SAMPLES[:3]] * 5
    corpus.write_text("\n".join(good[:4] + ['{"text": 5}'] + good[4:]) + "\n", encoding="utf-8")
    config = TokenizerTrainingConfig(inputs=[str(corpus)], output_dir=str(tmp_path / "tok"),
                                     vocab_size=300, show_progress=False)
    with pytest.raises(ValueError, match=r"corpus.jsonl:5: key 'text' must be a string"):
        train_tokenizer(config)
    assert not (tmp_path / "tok").exists()  # nothing half-written
    config.skip_bad = True
    report = train_tokenizer(config)
    assert report["skipped_bad_lines"] == 1 and report["documents"] == 15
    assert load_tokenizer(tmp_path / "tok").vocab_size <= 300
