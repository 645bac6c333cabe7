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
