"""EXAONE 3.x chat format: exact strings, assistant mask, and agreement with transformers."""

from __future__ import annotations

import pytest

from nemo_exaone.data.assets import build_tiny_tokenizer
from nemo_exaone.data.chat_format import (
    CHAT_TEMPLATE,
    DEFAULT_SYSTEM_PROMPT,
    chat_segments,
    encode_chat,
    render_chat,
)
from nemo_exaone.data.tokenizer import load_tokenizer


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    return build_tiny_tokenizer(tmp_path_factory.mktemp("tok"))


SINGLE = [{"role": "user", "content": "Hello!"}, {"role": "assistant", "content": "Hi there."}]
WITH_SYSTEM = [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT}, *SINGLE]
MULTI_KO = [
    {"role": "system", "content": "친절하게 답하세요."},
    {"role": "user", "content": "안녕?"},
    {"role": "assistant", "content": "안녕하세요!"},
    {"role": "user", "content": "2+2는?"},
    {"role": "assistant", "content": "4입니다."},
]


def test_single_turn_without_system_opens_with_empty_system_turn():
    assert render_chat(SINGLE) == (
        "[|system|][|endofturn|]\n[|user|]Hello!\n[|assistant|]Hi there.[|endofturn|]\n"
    )


def test_system_prompt_and_generation_prompt():
    expected = (
        "[|system|]You are EXAONE model from LG AI Research, a helpful assistant.[|endofturn|]\n"
        "[|user|]Hello!\n[|assistant|]Hi there.[|endofturn|]\n[|assistant|]"
    )
    assert render_chat(WITH_SYSTEM, add_generation_prompt=True) == expected


def test_multi_turn_korean():
    assert render_chat(MULTI_KO) == (
        "[|system|]친절하게 답하세요.[|endofturn|]\n"
        "[|user|]안녕?\n[|assistant|]안녕하세요![|endofturn|]\n"
        "[|user|]2+2는?\n[|assistant|]4입니다.[|endofturn|]\n"
    )


def test_prompt_only_with_generation_prompt():
    messages = [{"role": "user", "content": "What is 2+2?"}]
    assert render_chat(messages, add_generation_prompt=True) == (
        "[|system|][|endofturn|]\n[|user|]What is 2+2?\n[|assistant|]"
    )


def test_segments_mark_content_and_endofturn_but_not_tag_or_newline():
    assert chat_segments(SINGLE) == [
        ("[|system|][|endofturn|]\n[|user|]Hello!\n[|assistant|]", False),
        ("Hi there.[|endofturn|]", True),
        ("\n", False),
    ]


@pytest.mark.parametrize("messages", [[], [{"role": "tool", "content": "x"}],
                                      [{"role": "user", "content": 3}]])
def test_invalid_conversations_raise(messages):
    with pytest.raises(ValueError):
        render_chat(messages)


def test_encode_chat_decodes_to_rendering_and_masks_assistant_tokens(tokenizer_dir):
    tokenizer = load_tokenizer(tokenizer_dir)
    for messages in (SINGLE, WITH_SYSTEM, MULTI_KO):
        encoding = encode_chat(tokenizer, messages)
        assert len(encoding.ids) == len(encoding.assistant_mask)
        assert tokenizer.decode(encoding.ids) == render_chat(messages)
        assistant_ids = [i for i, m in zip(encoding.ids, encoding.assistant_mask) if m]
        expected = "".join(m["content"] + "[|endofturn|]" for m in messages
                           if m["role"] == "assistant")
        assert tokenizer.decode(assistant_ids) == expected
        # [|endofturn|] is one special token; the one closing each assistant turn is masked in
        eot_flags = [m for i, m in zip(encoding.ids, encoding.assistant_mask)
                     if i == tokenizer.eot_id]
        n_assistant = sum(m["role"] == "assistant" for m in messages)
        assert sum(eot_flags) == n_assistant
        assert encoding.assistant_mask[-1] == 0  # the trailing "\n"


def test_encode_chat_matches_whole_string_encoding_for_ordinary_text(tokenizer_dir):
    tokenizer = load_tokenizer(tokenizer_dir)
    encoding = encode_chat(tokenizer, MULTI_KO, add_generation_prompt=False)
    assert encoding.ids == tokenizer.encode(render_chat(MULTI_KO))


def test_transformers_chat_template_renders_the_same(tokenizer_dir):
    transformers = pytest.importorskip("transformers")
    auto = transformers.AutoTokenizer.from_pretrained(str(tokenizer_dir))
    assert auto.chat_template == CHAT_TEMPLATE
    for messages in (SINGLE, WITH_SYSTEM, MULTI_KO):
        for generation in (False, True):
            rendered = auto.apply_chat_template(messages, tokenize=False,
                                                add_generation_prompt=generation)
            assert rendered == render_chat(messages, add_generation_prompt=generation)
