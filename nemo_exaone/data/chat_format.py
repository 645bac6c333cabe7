"""The EXAONE 3.x chat format, rendered as text and as token ids with an assistant mask.

Layout (shared/notes/EXAONE.md)::

    [|system|]{system}[|endofturn|]\\n      (an EMPTY system turn if the chat has none first)
    [|user|]{user}\\n
    [|assistant|]{assistant}[|endofturn|]\\n
    [|assistant|]                            (generation prompt)

Assistant mask: the assistant *content* and its closing ``[|endofturn|]`` are assistant
tokens (the model must learn to write them and to stop); the role tag ``[|assistant|]`` and
the trailing ``\\n`` are not. The ``\\n`` is excluded because generation stops at
``[|endofturn|]``: the model never emits it, the template adds it when the next turn is
rendered.

Token ids are produced piece by piece (prompt text, assistant text, prompt text, ...) and
concatenated, so the tokens at the start of an assistant reply are exactly those the model
sees after a generation prompt at inference time; no BPE merge straddles the boundary
between ``[|assistant|]`` and the reply. The decoded ids always equal the rendered string.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from nemo_exaone.data.tokenizer import EOT_TOKEN, ExaoneTokenizer

__all__ = [
    "ROLES",
    "DEFAULT_SYSTEM_PROMPT",
    "CHAT_TEMPLATE",
    "GENERATION_PROMPT",
    "ChatEncoding",
    "chat_segments",
    "render_chat",
    "encode_chat",
]

ROLES = ("system", "user", "assistant")
DEFAULT_SYSTEM_PROMPT = "You are EXAONE model from LG AI Research, a helpful assistant."
GENERATION_PROMPT = "[|assistant|]"

# The same format as a Jinja template for ``tokenizer_config.json``, so that
# ``AutoTokenizer.apply_chat_template`` renders exactly what ``render_chat`` renders.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}{{ '[|system|][|endofturn|]\n' }}{% endif %}"
    "{{ '[|' + message['role'] + '|]' + message['content'] }}"
    "{% if message['role'] == 'user' %}{{ '\n' }}{% else %}{{ '[|endofturn|]\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '[|assistant|]' }}{% endif %}"
)


@dataclass(frozen=True)
class ChatEncoding:
    """Token ids of a rendered conversation and a 0/1 mask of assistant tokens."""

    ids: list[int]
    assistant_mask: list[int]


def _validate(messages: Sequence[dict]) -> None:
    if not messages:
        raise ValueError("a conversation needs at least one message")
    for index, message in enumerate(messages):
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise ValueError(f"message {index}: role must be one of {ROLES}, got {role!r}")
        if not isinstance(content, str):
            raise ValueError(f"message {index}: content must be a string")


def chat_segments(
    messages: Sequence[dict], add_generation_prompt: bool = False
) -> list[tuple[str, bool]]:
    """Split the rendered conversation into ``(text, is_assistant)`` pieces, in order.

    Adjacent pieces with the same flag are merged, so the list alternates.
    """
    _validate(messages)
    pieces: list[tuple[str, bool]] = []

    def emit(text: str, is_assistant: bool) -> None:
        if not text:
            return
        if pieces and pieces[-1][1] == is_assistant:
            pieces[-1] = (pieces[-1][0] + text, is_assistant)
        else:
            pieces.append((text, is_assistant))

    if messages[0]["role"] != "system":
        emit(f"[|system|]{EOT_TOKEN}\n", False)
    for message in messages:
        role, content = message["role"], message["content"]
        if role == "assistant":
            emit("[|assistant|]", False)
            emit(content + EOT_TOKEN, True)
            emit("\n", False)
        elif role == "user":
            emit(f"[|user|]{content}\n", False)
        else:
            emit(f"[|system|]{content}{EOT_TOKEN}\n", False)
    if add_generation_prompt:
        emit(GENERATION_PROMPT, False)
    return pieces


def render_chat(messages: Sequence[dict], add_generation_prompt: bool = False) -> str:
    """Render ``[{"role", "content"}, ...]`` in the EXAONE 3.x chat format."""
    return "".join(text for text, _ in chat_segments(messages, add_generation_prompt))


def encode_chat(
    tokenizer: ExaoneTokenizer, messages: Sequence[dict], add_generation_prompt: bool = False
) -> ChatEncoding:
    """Token ids of the rendered conversation plus the assistant mask (see module doc)."""
    segments = chat_segments(messages, add_generation_prompt)
    encoded = tokenizer.encode_batch([text for text, _ in segments])
    ids: list[int] = []
    mask: list[int] = []
    for (_, is_assistant), piece_ids in zip(segments, encoded):
        ids.extend(piece_ids)
        mask.extend([int(is_assistant)] * len(piece_ids))
    return ChatEncoding(ids=ids, assistant_mask=mask)
