"""EXAONE 4.0 chat format: the published template's text, our Jinja template through
transformers' ``apply_chat_template``, the assistant mask, and the 3.x format left as it was.

The expected strings are hand-written from LG AI Research's chat template for EXAONE 4.0 (posted
in full by LG in ggml-org/llama.cpp PR #14630; the same text is quoted in gorilla's BFCL
EXAONE 4 handlers), read rather than stored (the template ships under the EXAONE model licence):

* role indicators carry a newline: ``[|user|]\\n``, ``[|assistant|]\\n``, ``[|system|]\\n``;
  every turn, the user's included, ends with ``end_of_turn = '[|endofturn|]\\n'``;
* no empty system turn is inserted (3.x inserts one);
* an assistant turn with content renders ``<think>\\n\\n</think>\\n\\n`` + content unless
  ``not skip_think and loop.last`` and it has reasoning; ``skip_think`` defaults to true;
  content after ``</think>`` is ``.strip()``-ed;
* generation prompt: ``[|assistant|]\\n`` + ``<think>\\n`` when ``enable_thinking is true``, else
  ``<think>\\n\\n</think>\\n\\n``. The block is ``<think>``, not EXAONE Deep's ``<thought>``
  (transformers' exaone4.md: reasoning mode "opens a reasoning block that starts with
  ``<think>``").
"""

from __future__ import annotations

import pytest

from nemo_exaone.config.presets import get_preset
from nemo_exaone.data.assets import build_tiny_tokenizer
from nemo_exaone.data.chat_format import (
    CHAT_TEMPLATE,
    CHAT_TEMPLATE_EXAONE4,
    chat_format_for,
    chat_segments,
    detect_chat_format,
    encode_chat,
    generation_prompt,
    render_chat,
)
from nemo_exaone.data.tokenizer import load_tokenizer

EOT = "[|endofturn|]"
EMPTY = "<think>\n\n</think>\n\n"
USER = [{"role": "user", "content": "Hello!"}]
MULTI = [
    {"role": "system", "content": "You are EXAONE model from LG AI Research."},
    {"role": "user", "content": "2+2?"},
    {"role": "assistant", "content": "4."},
    {"role": "user", "content": "그럼 3+3은?"},
]
EMBEDDED = [{"role": "user", "content": "Why?"},
            {"role": "assistant", "content": "<think>\nbecause\n</think>\n\n Answer. "}]
REASONED = [*MULTI, {"role": "assistant", "content": "6입니다.", "reasoning_content": "3+3=6"}]
FIRST_TURNS = (f"[|system|]\nYou are EXAONE model from LG AI Research.{EOT}\n"
               f"[|user|]\n2+2?{EOT}\n[|assistant|]\n{EMPTY}4.{EOT}\n")

# (messages, keyword arguments, the published template's rendering)
CASES = [
    (USER, {"add_generation_prompt": True},
     f"[|user|]\nHello!{EOT}\n[|assistant|]\n{EMPTY}"),
    (USER, {"add_generation_prompt": True, "enable_thinking": True},
     f"[|user|]\nHello!{EOT}\n[|assistant|]\n<think>\n"),
    (MULTI, {"add_generation_prompt": True},
     f"[|system|]\nYou are EXAONE model from LG AI Research.{EOT}\n"
     f"[|user|]\n2+2?{EOT}\n[|assistant|]\n{EMPTY}4.{EOT}\n"
     f"[|user|]\n그럼 3+3은?{EOT}\n[|assistant|]\n{EMPTY}"),
    # reasoning in the content of a past turn: dropped, the answer stripped
    (EMBEDDED, {}, f"[|user|]\nWhy?{EOT}\n[|assistant|]\n{EMPTY}Answer.{EOT}\n"),
    # the last turn's reasoning: dropped by default (skip_think), kept with skip_think=False
    (REASONED, {}, FIRST_TURNS + f"[|user|]\n그럼 3+3은?{EOT}\n[|assistant|]\n{EMPTY}6입니다.{EOT}\n"),
    (REASONED, {"skip_think": False}, FIRST_TURNS + f"[|user|]\n그럼 3+3은?{EOT}\n[|assistant|]\n<think>\n3+3=6\n</think>\n\n6입니다.{EOT}\n"),
    (EMBEDDED, {"skip_think": False},
     f"[|user|]\nWhy?{EOT}\n[|assistant|]\n<think>\nbecause\n</think>\n\nAnswer.{EOT}\n"),
    # only the LAST message keeps its reasoning: a past turn's is dropped even then
    ([*EMBEDDED, {"role": "user", "content": "Sure?"}], {"skip_think": False},
     f"[|user|]\nWhy?{EOT}\n[|assistant|]\n{EMPTY}Answer.{EOT}\n[|user|]\nSure?{EOT}\n"),
    # an assistant turn without content has no think block
    ([*USER, {"role": "assistant", "content": ""}], {},
     f"[|user|]\nHello!{EOT}\n[|assistant|]\n{EOT}\n"),
]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    return build_tiny_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.mark.parametrize("messages, kwargs, expected", CASES)
def test_renders_the_published_format(messages, kwargs, expected):
    assert render_chat(messages, chat_format="exaone4", **kwargs) == expected


def test_transformers_renders_our_template_identically(tokenizer_dir):
    transformers = pytest.importorskip("transformers")
    auto = transformers.AutoTokenizer.from_pretrained(str(tokenizer_dir))
    for messages, kwargs, expected in CASES:
        rendered = auto.apply_chat_template(
            messages, chat_template=CHAT_TEMPLATE_EXAONE4, tokenize=False,
            add_generation_prompt=kwargs.get("add_generation_prompt", False),
            **{k: v for k, v in kwargs.items() if k != "add_generation_prompt"})
        assert rendered == expected, (messages, kwargs)


def test_segments_mark_the_reply_not_the_prompt_or_empty_think():
    assert chat_segments(MULTI[1:3], chat_format="exaone4") == [
        (f"[|user|]\n2+2?{EOT}\n[|assistant|]\n{EMPTY}", False),
        (f"4.{EOT}", True),
        ("\n", False),
    ]
    assert chat_segments(EMBEDDED, chat_format="exaone4", skip_think=False)[1:] == [
        ("because\n</think>\n\nAnswer.[|endofturn|]", True),
        ("\n", False),
    ]


@pytest.mark.parametrize("messages, kwargs, reply", [
    (MULTI[:3], {}, f"4.{EOT}"),
    (REASONED, {}, f"4.{EOT}6입니다.{EOT}"),
    (REASONED, {"skip_think": False}, f"4.{EOT}3+3=6\n</think>\n\n6입니다.{EOT}"),
])
def test_encoding_decodes_to_the_rendering_and_masks_the_replies(tokenizer_dir, messages,
                                                                  kwargs, reply):
    tokenizer = load_tokenizer(tokenizer_dir)
    encoding = encode_chat(tokenizer, messages, chat_format="exaone4", **kwargs)
    assert tokenizer.decode(encoding.ids) == render_chat(messages, chat_format="exaone4",
                                                         **kwargs)
    assert tokenizer.decode([i for i, m in zip(encoding.ids, encoding.assistant_mask)
                             if m]) == reply
    assert encoding.assistant_mask[-1] == 0  # the "\n" after [|endofturn|]


@pytest.mark.parametrize("enable_thinking", [False, True])
def test_the_trained_reply_starts_where_generation_starts(tokenizer_dir, enable_thinking):
    # SFT trains what follows the generation prompt: the prompt's ids are a prefix of the
    # conversation's, none of them an assistant token, and every id after them is one up to
    # the closing [|endofturn|].
    tokenizer = load_tokenizer(tokenizer_dir)
    kwargs = {"skip_think": not enable_thinking}
    prompt = encode_chat(tokenizer, REASONED[:-1], add_generation_prompt=True,
                         chat_format="exaone4", enable_thinking=enable_thinking)
    full = encode_chat(tokenizer, REASONED, chat_format="exaone4", **kwargs)
    n = len(prompt.ids)
    assert full.ids[:n] == prompt.ids
    assert full.assistant_mask[:n] == prompt.assistant_mask
    assert tokenizer.decode(prompt.ids).endswith(generation_prompt("exaone4", enable_thinking))
    assert full.assistant_mask[n:] == [1] * (len(full.ids) - n - 1) + [0]


def test_chat_format_follows_the_model_family_and_the_template():
    assert chat_format_for(get_preset("exaone4.0-32b").model_type) == "exaone4"
    assert chat_format_for(get_preset("tiny4").model_type) == "exaone4"
    assert chat_format_for(get_preset("exaone3.5-2.4b").model_type) == "exaone3"
    assert detect_chat_format(CHAT_TEMPLATE) == "exaone3"
    assert detect_chat_format(CHAT_TEMPLATE_EXAONE4) == "exaone4"
    with pytest.raises(ValueError, match="model_type='llama' has no known chat format"):
        chat_format_for("llama")
    with pytest.raises(ValueError, match="not an EXAONE template"):
        detect_chat_format("{{ messages }}")


def test_exaone3_is_unchanged_and_has_no_reasoning_mode():
    chat = [*MULTI, {"role": "assistant", "content": "6."}]
    assert render_chat(chat) == render_chat(chat, chat_format="exaone3") == (
        "[|system|]You are EXAONE model from LG AI Research.[|endofturn|]\n"
        "[|user|]2+2?\n[|assistant|]4.[|endofturn|]\n[|user|]그럼 3+3은?\n"
        "[|assistant|]6.[|endofturn|]\n")
    assert generation_prompt() == "[|assistant|]"
    with pytest.raises(ValueError, match="EXAONE 3.x chat format has no reasoning mode"):
        render_chat(USER, add_generation_prompt=True, enable_thinking=True)
    with pytest.raises(ValueError, match="EXAONE 3.x chat format has no reasoning mode"):
        render_chat(REASONED, skip_think=False)


@pytest.mark.parametrize("messages, kwargs, message", [
    (USER, {"chat_format": "exaone5"}, "chat_format='exaone5': choose one of exaone3, exaone4"),
    ([*USER, {"role": "tool", "content": "{}"}], {"chat_format": "exaone4"},
     r"message 1: role must be one of \('system', 'user', 'assistant'\), got 'tool'"),
    ([*USER, {"role": "assistant", "content": "x", "reasoning_content": 3}],
     {"chat_format": "exaone4"}, "message 1: reasoning_content must be a string"),
])
def test_refused_naming_the_problem(messages, kwargs, message):
    with pytest.raises(ValueError, match=message):
        render_chat(messages, **kwargs)


def test_sft_on_an_exaone4_model_uses_the_exaone4_format(tmp_path, tokenizer_dir):
    # data.source=chat: the architecture's model_type picks the format (tiny4: EXAONE 4.0).
    import json
    from types import SimpleNamespace

    from nemo_exaone.data.sft_datasets import build_chat_source

    path = tmp_path / "chats.jsonl"
    path.write_text(json.dumps({"messages": MULTI[1:3]}) + "\n", encoding="utf-8")
    data = SimpleNamespace(chat_files=[str(path)], tokenizer_dir=str(tokenizer_dir), seed=1,
                           shuffle=False, pack_documents=False, too_long_documents="error")
    tokenizer = load_tokenizer(tokenizer_dir)
    for preset, chat_format in (("tiny4", "exaone4"), ("tiny", "exaone3")):
        samples, _, _ = build_chat_source(data, 64, get_preset(preset), tmp_path)
        ids, mask = samples.pieces[0]
        assert tokenizer.decode(ids) == render_chat(MULTI[1:3], chat_format=chat_format)
        assert tokenizer.decode([i for i, m in zip(ids, mask) if m]) == f"4.{EOT}"


def test_generate_chat_prompt_follows_the_checkpoint_family(tokenizer_dir):
    # `nemo-exaone generate --chat` renders the prompt in the checkpoint's format.
    import argparse

    from nemo_exaone.commands.generate import _prompts

    tokenizer = load_tokenizer(tokenizer_dir)
    args = argparse.Namespace(prompt_ids=None, chat=True, prompt=["Hello!"])
    for model_type, expected in (
            ("exaone4", f"[|user|]\nHello!{EOT}\n[|assistant|]\n{EMPTY}"),
            ("exaone", f"[|system|]{EOT}\n[|user|]Hello!\n[|assistant|]")):
        [ids] = _prompts(args, tokenizer, "ckpt", model_type)
        assert tokenizer.decode(ids) == expected


def test_data_render_chat_cli_renders_the_4_0_format(tmp_path, capsys):
    import json

    from nemo_exaone.cli import main

    conversation = tmp_path / "chat.json"
    conversation.write_text(json.dumps(USER), encoding="utf-8")
    assert main(["data", "render-chat", str(conversation), "--generation-prompt",
                 "--chat-format", "exaone4", "--enable-thinking"]) == 0
    assert capsys.readouterr().out == f"[|user|]\nHello!{EOT}\n[|assistant|]\n<think>\n"


def test_preference_pairs_for_an_exaone4_model_use_the_exaone4_format(tmp_path, tokenizer_dir):
    # data.source=preference (DPO and the reward model): the response is what follows the
    # family's generation prompt; for 4.0 the empty <think> block is prompt, not response.
    import json
    from types import SimpleNamespace

    from nemo_exaone.alignment.preference_data import build_preference_source

    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps({"prompt": "2+2?", "chosen_response": "4.",
                                "rejected_response": "5."}) + "\n", encoding="utf-8")
    data = SimpleNamespace(preference_file=str(path), tokenizer_dir=str(tokenizer_dir), seed=1,
                           shuffle=False, too_long_documents="error")
    tokenizer = load_tokenizer(tokenizer_dir)
    for preset, chat_format in (("tiny4", "exaone4"), ("tiny", "exaone3")):
        samples, _, _ = build_preference_source(data, 64, get_preset(preset), tmp_path)
        item = samples.items[0]
        length = int(item["chosen_length"])
        ids = item["chosen_tokens"][:length].tolist()
        chat = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4."}]
        assert tokenizer.decode(ids) == render_chat(chat, chat_format=chat_format)
        # mask at label positions: token t+1 is a response token
        response = [ids[t + 1] for t in range(length - 1) if item["chosen_mask"][t]]
        assert tokenizer.decode(response) == f"4.{EOT}\n"
