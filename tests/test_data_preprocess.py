"""JSONL -> Megatron indexed dataset: token ids, document boundaries, masks, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nemo_exaone.cli import main
from nemo_exaone.data.assets import asset_paths, build_tiny_tokenizer
from nemo_exaone.data.chat_format import encode_chat
from nemo_exaone.data.preprocess import PreprocessConfig, mask_prefix, preprocess
from nemo_exaone.data.tokenizer import load_tokenizer


def IndexedDataset(prefix):  # noqa: N802 - imported after nemo_exaone (megatron 0.19 stub)
    from megatron.core.datasets.indexed_dataset import IndexedDataset as Megatron

    return Megatron(str(prefix))


TEXTS = ["첫 번째 문서입니다.", "The second document.", "", "세 번째, third: 혼합 mixed 😀"]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    return build_tiny_tokenizer(tmp_path_factory.mktemp("tok"))


def _write_jsonl(path, records):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records),
                    encoding="utf-8")
    return path


def _config(tokenizer_dir, inputs, prefix, **kwargs):
    kwargs.setdefault("show_progress", False)
    return PreprocessConfig(inputs=[str(p) for p in inputs], output_prefix=str(prefix),
                            tokenizer_dir=str(tokenizer_dir), **kwargs)


def test_megatron_reads_back_ids_and_document_boundaries(tokenizer_dir, tmp_path):
    data = _write_jsonl(tmp_path / "train.jsonl", [{"text": t, "id": i} for i, t in enumerate(TEXTS)])
    result = preprocess(_config(tokenizer_dir, [data], tmp_path / "out", workers=0))
    tokenizer = load_tokenizer(tokenizer_dir)
    expected = [tokenizer.encode(t) + [tokenizer.eod_id] for t in TEXTS]
    dataset = IndexedDataset(str(tmp_path / "out"))
    assert len(dataset) == len(TEXTS) == result.documents
    assert dataset.document_indices.tolist() == list(range(len(TEXTS) + 1))
    for index, ids in enumerate(expected):
        assert dataset[index].tolist() == ids
    assert result.tokens == sum(map(len, expected))
    assert dataset[0].dtype == np.uint16  # small vocab: 2 bytes per token
    stats = json.loads((tmp_path / "out.stats.json").read_text())
    assert stats["documents"] == len(TEXTS) and stats["append_eod"] is True


def test_worker_count_does_not_change_output(tokenizer_dir, tmp_path):
    corpus = asset_paths()["corpus"]
    outputs = {}
    for workers in (0, 2):
        prefix = tmp_path / f"w{workers}"
        preprocess(_config(tokenizer_dir, [corpus], prefix, workers=workers, chunk_bytes=8192))
        outputs[workers] = ((tmp_path / f"w{workers}.bin").read_bytes(),
                            (tmp_path / f"w{workers}.idx").read_bytes())
    assert outputs[0] == outputs[2]


def test_several_inputs_are_concatenated_in_order(tokenizer_dir, tmp_path):
    a = _write_jsonl(tmp_path / "a.jsonl", [{"body": "alpha"}])
    b = _write_jsonl(tmp_path / "b.jsonl", [{"body": "beta"}, {"body": "gamma"}])
    preprocess(_config(tokenizer_dir, [a, b], tmp_path / "ab", text_key="body", workers=1))
    tokenizer = load_tokenizer(tokenizer_dir)
    dataset = IndexedDataset(str(tmp_path / "ab"))
    assert [tokenizer.decode(dataset[i].tolist()) for i in range(3)] == [
        "alpha[|endofturn|]", "beta[|endofturn|]", "gamma[|endofturn|]"]


def test_chat_mode_writes_matching_assistant_mask(tokenizer_dir, tmp_path):
    chats = [json.loads(line) for line in asset_paths()["chat_sft"].read_text().splitlines()[:20]]
    data = _write_jsonl(tmp_path / "chat.jsonl", chats)
    result = preprocess(_config(tokenizer_dir, [data], tmp_path / "sft", mode="chat", workers=2,
                                chunk_bytes=1500))
    tokenizer = load_tokenizer(tokenizer_dir)
    tokens = IndexedDataset(str(tmp_path / "sft"))
    masks = IndexedDataset(mask_prefix(tmp_path / "sft"))
    assert np.array_equal(tokens.sequence_lengths, masks.sequence_lengths)
    assert np.array_equal(tokens.document_indices, masks.document_indices)
    for index, chat in enumerate(chats):
        encoding = encode_chat(tokenizer, chat["messages"])
        assert tokens[index].tolist() == encoding.ids  # no EOD appended in chat mode
        assert masks[index].tolist() == encoding.assistant_mask
    assert result.assistant_tokens == int(sum(masks[i].sum() for i in range(len(chats))))


BAD_LINES = [
    (b'{"text": "ok"}\n{"text": "broken"\n', "bad.jsonl:2: malformed JSON"),
    (b'{"text": "ok"}\n{"other": "x"}\n', "bad.jsonl:2: missing key 'text'"),
    (b'{"text": ["a"]}\n', "bad.jsonl:1: key 'text' must be a string, got list"),
    (b'{"text": "ok"}\n\n{"text": "ok"}\n', "bad.jsonl:2: empty line"),
    (b'{"text": "ok"}\n{"text": "\xff\xfe"}\n', "bad.jsonl:2: not valid UTF-8"),
    (b'[1, 2]\n', "bad.jsonl:1: expected a JSON object"),
]


@pytest.mark.parametrize("content,message", BAD_LINES)
@pytest.mark.parametrize("workers", [0, 1])
def test_bad_lines_name_file_and_line_and_leave_nothing(tokenizer_dir, tmp_path, content,
                                                         message, workers):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        preprocess(_config(tokenizer_dir, [bad], tmp_path / "out", workers=workers))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl"]


def test_bad_chat_records(tokenizer_dir, tmp_path):
    bad = _write_jsonl(tmp_path / "chat.jsonl", [
        {"messages": [{"role": "user", "content": "hi"}]},
        {"messages": [{"role": "user"}]},
        {"messages": [{"role": "robot", "content": "x"}]},
        {"messages": []},
    ])
    with pytest.raises(ValueError, match=r"chat.jsonl:2: messages\[0\]: missing key 'content'"):
        preprocess(_config(tokenizer_dir, [bad], tmp_path / "c", mode="chat", workers=0))
    result = preprocess(_config(tokenizer_dir, [bad], tmp_path / "c", mode="chat", workers=0,
                                skip_bad=True))
    assert result.documents == 1 and result.skipped.skipped == 3
    assert "chat.jsonl:3: message 0: role must be one of" in result.skipped.examples[1]


def test_skip_bad_counts_lines(tokenizer_dir, tmp_path):
    bad = tmp_path / "mixed.jsonl"
    bad.write_bytes(b'{"text": "a"}\nnot json\n{"text": 1}\n\n{"text": "b"}\n')
    result = preprocess(_config(tokenizer_dir, [bad], tmp_path / "out", workers=1,
                                skip_bad=True))
    assert result.documents == 2 and result.skipped.skipped == 3
    assert json.loads((tmp_path / "out.stats.json").read_text())["skipped_bad_lines"] == 3


def test_cli_preprocess_and_clean_errors(tokenizer_dir, tmp_path, capsys):
    data = _write_jsonl(tmp_path / "t.jsonl", [{"text": "hello"}])
    code = main(["data", "preprocess", "--input", str(data), "--output-prefix",
                 str(tmp_path / "o"), "--tokenizer", str(tokenizer_dir), "--quiet"])
    assert code == 0 and json.loads(capsys.readouterr().out)["documents"] == 1
    (tmp_path / "b.jsonl").write_text('{"txt": "x"}\n')
    code = main(["data", "preprocess", "--input", str(tmp_path / "b.jsonl"), "--output-prefix",
                 str(tmp_path / "p"), "--tokenizer", str(tokenizer_dir), "--quiet"])
    assert code == 2
    assert "b.jsonl:1: missing key 'text'" in capsys.readouterr().err
    code = main(["data", "preprocess", "--input", str(tmp_path / "nope.jsonl"),
                 "--output-prefix", str(tmp_path / "p"), "--tokenizer", str(tokenizer_dir)])
    assert code == 2 and "nope.jsonl" in capsys.readouterr().err


@pytest.mark.parametrize("block_bytes", [1, 5, 64, 1 << 20])
def test_line_blocks_split_exactly_like_line_iteration(tmp_path, block_bytes):
    from nemo_exaone.data.jsonl import iter_line_blocks, iter_raw_lines

    path = tmp_path / "f.jsonl"
    path.write_bytes(b"\xef\xbb\xbf{\"a\": 1}\r\n\n" + b"x" * 200 + b"\nlast line without newline")
    blocks = [pair for block in iter_line_blocks(path, block_bytes) for pair in block.lines()]
    assert blocks == list(iter_raw_lines(path))
    assert blocks[0] == (1, b'{"a": 1}') and blocks[-1][0] == 4
