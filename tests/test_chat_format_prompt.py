"""Chat format details that mutation testing found unchecked (see TESTING.md): the generation
prompt in token form is never an assistant token, and malformed conversations are refused
with a message that names the problem."""

from __future__ import annotations

import pytest

from nemo_exaone.data.assets import build_tiny_tokenizer
from nemo_exaone.data.chat_format import GENERATION_PROMPT, encode_chat, render_chat
from nemo_exaone.data.tokenizer import load_tokenizer

CHAT = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4."},
        {"role": "user", "content": "And 3+3?"}]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return load_tokenizer(build_tiny_tokenizer(tmp_path_factory.mktemp("tok")))


def test_encoded_generation_prompt_ends_the_ids_and_is_not_an_assistant_token(tokenizer):
    plain = encode_chat(tokenizer, CHAT)
    prompted = encode_chat(tokenizer, CHAT, add_generation_prompt=True)
    assert tokenizer.decode(prompted.ids) == render_chat(CHAT, add_generation_prompt=True)
    assert prompted.ids[:len(plain.ids)] == plain.ids
    tail = prompted.ids[len(plain.ids):]
    assert tokenizer.decode(tail) == GENERATION_PROMPT
    # what the model sees before it answers is prompt, not a target
    assert prompted.assistant_mask[len(plain.ids):] == [0] * len(tail)
    assert prompted.assistant_mask[:len(plain.ids)] == plain.assistant_mask


@pytest.mark.parametrize("messages, message", [
    ([], "a conversation needs at least one message"),
    ([{"role": "user", "content": "hi"}, {"role": "bot", "content": "x"}],
     r"message 1: role must be one of .*got 'bot'"),
    ([{"role": "user", "content": 3}], "message 0: content must be a string"),
])
def test_malformed_conversation_is_refused_naming_the_problem(messages, message):
    with pytest.raises(ValueError, match=message):
        render_chat(messages)
