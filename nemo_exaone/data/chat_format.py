"""The EXAONE chat formats (3.x and 4.0) as text and as token ids with an assistant mask.

``chat_format`` picks the family: ``"exaone3"`` (the default: EXAONE 3.0/3.5) or ``"exaone4"``
(EXAONE 4.0); :func:`chat_format_for` maps a config's ``model_type`` to it and
:func:`detect_chat_format` a tokenizer's ``chat_template``.

EXAONE 3.x layout (shared/notes/EXAONE.md)::

    [|system|]{system}[|endofturn|]\\n      (an EMPTY system turn if the chat has none first)
    [|user|]{user}\\n
    [|assistant|]{assistant}[|endofturn|]\\n
    [|assistant|]                            (generation prompt)

Assistant mask: the assistant *content* and its closing ``[|endofturn|]`` are assistant
tokens (the model must learn to write them and to stop); the role tag ``[|assistant|]`` and
the trailing ``\\n`` are not. The ``\\n`` is excluded because generation stops at
``[|endofturn|]``: the model never emits it, the template adds it when the next turn is
rendered.

EXAONE 4.0 layout, as LG's published template renders it (the ``chat_template`` of the
EXAONE-4.0 repositories, posted in full by LG AI Research in ggml-org/llama.cpp PR #14630;
not copied here: :data:`CHAT_TEMPLATE_EXAONE4` is our own template for the same text)::

    [|system|]\n{system}[|endofturn|]\n     (only when given: no empty system turn)
    [|user|]\n{user}[|endofturn|]\n
    [|assistant|]\n<think>\n\n</think>\n\n{assistant}[|endofturn|]\n
    [|assistant|]\n<think>\n\n</think>\n\n       (generation prompt, non-reasoning mode)
    [|assistant|]\n<think>\n                    (generation prompt, enable_thinking=True)

Every turn ends with ``[|endofturn|]\n`` (the user's too) and every role tag is followed by a
newline. The reasoning block is ``<think>`` ... ``</think>`` (not EXAONE Deep's ``<thought>``).
Past assistant turns are rendered with an EMPTY reasoning block (the template's ``skip_think``,
true by default); only with ``skip_think=False`` does the LAST message, when it is an assistant
turn carrying reasoning (``reasoning_content``, or ``<think>...</think>`` before its answer),
keep it: ``<think>\n{reasoning}\n</think>\n\n{answer}``. An answer written after ``</think>`` is
stripped of surrounding whitespace, as the template does; a leading ``<think>`` is removed from
embedded reasoning (the published template slices off 9 characters there, the length of EXAONE
Deep's ``<thought>``, which also eats the reasoning's first character; we remove the 7 of
``<think>``). An assistant turn with empty content is ``[|assistant|]\n[|endofturn|]\n``. Tool
declarations and tool calls are not rendered (the ``tool`` role is refused).

Assistant mask (both families): what the model writes after the generation prompt. In 4.0 the
empty ``<think>\n\n</think>\n\n`` is part of the non-reasoning generation prompt, so it is not an
assistant token; with reasoning kept, ``<think>\n`` is prompt and ``{reasoning}\n</think>\n\n``
onwards is assistant. ``[|endofturn|]`` closing the reply is an assistant token, the ``\n`` after
it is not.

Token ids are produced piece by piece (prompt text, assistant text, prompt text, ...) and
concatenated, so the tokens at the start of an assistant reply are exactly those the model
sees after a generation prompt at inference time; no BPE merge straddles the boundary
between ``[|assistant|]`` and the reply. The decoded ids always equal the rendered string.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from nemo_exaone.data.tokenizer import EOT_TOKEN, ExaoneTokenizer

__all__ = [
    "ROLES",
    "DEFAULT_SYSTEM_PROMPT",
    "CHAT_TEMPLATE",
    "CHAT_TEMPLATE_EXAONE4",
    "CHAT_TEMPLATES",
    "CHAT_FORMATS",
    "GENERATION_PROMPT",
    "ChatEncoding",
    "chat_format_for",
    "detect_chat_format",
    "generation_prompt",
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

# EXAONE 4.0 (see the module doc). The reasoning block's tags and the empty block that stands
# for "no reasoning" in past turns and in the non-reasoning generation prompt.
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
EMPTY_THINK = f"{THINK_OPEN}\n\n{THINK_CLOSE}\n\n"

# Our Jinja template rendering exactly what render_chat(..., chat_format="exaone4") renders
# (template variables enable_thinking and skip_think as in LG's template).
CHAT_TEMPLATE_EXAONE4 = (
    "{%- set keep_last_reasoning = skip_think is defined and skip_think is false -%}"
    "{%- for message in messages -%}"
    "{%- if message['role'] not in ['system', 'user', 'assistant'] -%}"
    "{{- raise_exception('unsupported role: ' ~ message['role']) -}}"
    "{%- endif -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{- '[|assistant|]\n' -}}"
    "{%- if message['content'] -%}"
    "{%- set parts = message['content'].split('</think>') -%}"
    "{%- set answer = parts[-1].strip() if parts | length > 1 else message['content'] -%}"
    "{%- set reasoning = parts[0].strip() if parts | length > 1 else '' -%}"
    "{%- set reasoning = reasoning[7:].strip() if reasoning.startswith('<think>')"
    " else reasoning -%}"
    "{%- set has_reasoning = parts | length > 1 -%}"
    "{%- if message.get('reasoning_content') -%}"
    "{%- set reasoning = message['reasoning_content'] -%}{%- set has_reasoning = true -%}"
    "{%- endif -%}"
    "{%- if keep_last_reasoning and loop.last and has_reasoning -%}"
    "{{- '<think>\n' + reasoning + '\n</think>\n\n' -}}"
    "{%- else -%}{{- '<think>\n\n</think>\n\n' -}}{%- endif -%}"
    "{{- answer -}}"
    "{%- endif -%}"
    "{{- '[|endofturn|]\n' -}}"
    "{%- else -%}"
    "{{- '[|' + message['role'] + '|]\n' + message['content'] + '[|endofturn|]\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '[|assistant|]\n' -}}"
    "{%- if enable_thinking is defined and enable_thinking is true -%}{{- '<think>\n' -}}"
    "{%- else -%}{{- '<think>\n\n</think>\n\n' -}}{%- endif -%}"
    "{%- endif -%}"
)

CHAT_FORMATS = ("exaone3", "exaone4")
CHAT_TEMPLATES: dict[str, str] = {"exaone3": CHAT_TEMPLATE, "exaone4": CHAT_TEMPLATE_EXAONE4}
# HF config.json model_type -> chat format.
_FORMAT_BY_MODEL_TYPE = {"exaone": "exaone3", "exaone4": "exaone4"}


def chat_format_for(model_type: str) -> str:
    """The chat format of a model family (``model_type`` of its config.json / ExaoneArch)."""
    if model_type not in _FORMAT_BY_MODEL_TYPE:
        raise ValueError(f"model_type={model_type!r} has no known chat format; expected one of "
                         f"{sorted(_FORMAT_BY_MODEL_TYPE)}")
    return _FORMAT_BY_MODEL_TYPE[model_type]


def detect_chat_format(chat_template: str) -> str:
    """The chat format a tokenizer's ``chat_template`` renders: 4.0's puts a newline after the
    role tags and has the ``<think>`` block; 3.x's has neither."""
    if "[|endofturn|]" not in chat_template or "[|assistant|]" not in chat_template:
        raise ValueError("chat_template is not an EXAONE template (no [|assistant|] / "
                         "[|endofturn|])")
    return "exaone4" if THINK_CLOSE in chat_template else "exaone3"


def _check_format(chat_format: str) -> None:
    if chat_format not in CHAT_FORMATS:
        raise ValueError(f"chat_format={chat_format!r}: choose one of {', '.join(CHAT_FORMATS)}")


def generation_prompt(chat_format: str = "exaone3", enable_thinking: bool = False) -> str:
    """The text that opens the assistant's reply at inference time."""
    _check_format(chat_format)
    if chat_format == "exaone3":
        if enable_thinking:
            raise ValueError("enable_thinking: the EXAONE 3.x chat format has no reasoning mode")
        return GENERATION_PROMPT
    return "[|assistant|]\n" + (f"{THINK_OPEN}\n" if enable_thinking else EMPTY_THINK)


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


def _split_reasoning(message: dict) -> tuple[str, str | None]:
    """(answer, reasoning or None) of a 4.0 assistant message, as LG's template splits it."""
    content = message["content"]
    reasoning: str | None = None
    if THINK_CLOSE in content:
        parts = content.split(THINK_CLOSE)
        content, reasoning = parts[-1].strip(), parts[0].strip()
        if reasoning.startswith(THINK_OPEN):
            reasoning = reasoning[len(THINK_OPEN):].strip()
    explicit = message.get("reasoning_content")
    if explicit is not None and not isinstance(explicit, str):
        raise ValueError("reasoning_content must be a string")
    if explicit:
        reasoning = explicit
    return content, reasoning


def _exaone4_segments(messages: Sequence[dict], add_generation_prompt: bool,
                      enable_thinking: bool, skip_think: bool,
                      emit: Callable[[str, bool], None]) -> None:
    last = len(messages) - 1
    for index, message in enumerate(messages):
        role, content = message["role"], message["content"]
        if role != "assistant":
            emit(f"[|{role}|]\n{content}{EOT_TOKEN}\n", False)
            continue
        emit("[|assistant|]\n", False)
        if content:
            try:
                answer, reasoning = _split_reasoning(message)
            except ValueError as error:
                raise ValueError(f"message {index}: {error}") from None
            if not skip_think and index == last and reasoning is not None:
                emit(f"{THINK_OPEN}\n", False)
                emit(f"{reasoning}\n{THINK_CLOSE}\n\n{answer}", True)
            else:
                emit(EMPTY_THINK, False)
                emit(answer, True)
        emit(EOT_TOKEN, True)
        emit("\n", False)
    if add_generation_prompt:
        emit(generation_prompt("exaone4", enable_thinking), False)


def chat_segments(
    messages: Sequence[dict], add_generation_prompt: bool = False, *,
    chat_format: str = "exaone3", enable_thinking: bool = False, skip_think: bool = True,
) -> list[tuple[str, bool]]:
    """Split the rendered conversation into ``(text, is_assistant)`` pieces, in order.

    Adjacent pieces with the same flag are merged, so the list alternates. ``enable_thinking``
    (open a reasoning block in the generation prompt) and ``skip_think=False`` (keep the last
    assistant turn's reasoning) exist in the EXAONE 4.0 format only.
    """
    _check_format(chat_format)
    _validate(messages)
    if chat_format == "exaone3" and (enable_thinking or not skip_think):
        raise ValueError("enable_thinking / skip_think: the EXAONE 3.x chat format has no "
                         "reasoning mode (use chat_format='exaone4')")
    pieces: list[tuple[str, bool]] = []

    def emit(text: str, is_assistant: bool) -> None:
        if not text:
            return
        if pieces and pieces[-1][1] == is_assistant:
            pieces[-1] = (pieces[-1][0] + text, is_assistant)
        else:
            pieces.append((text, is_assistant))

    if chat_format == "exaone4":
        _exaone4_segments(messages, add_generation_prompt, enable_thinking, skip_think, emit)
        return pieces
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


def render_chat(messages: Sequence[dict], add_generation_prompt: bool = False, *,
                chat_format: str = "exaone3", enable_thinking: bool = False,
                skip_think: bool = True) -> str:
    """Render ``[{"role", "content"}, ...]`` in an EXAONE chat format (3.x by default)."""
    return "".join(text for text, _ in chat_segments(
        messages, add_generation_prompt, chat_format=chat_format,
        enable_thinking=enable_thinking, skip_think=skip_think))


def encode_chat(
    tokenizer: ExaoneTokenizer, messages: Sequence[dict], add_generation_prompt: bool = False,
    *, chat_format: str = "exaone3", enable_thinking: bool = False, skip_think: bool = True,
) -> ChatEncoding:
    """Token ids of the rendered conversation plus the assistant mask (see module doc)."""
    segments = chat_segments(messages, add_generation_prompt, chat_format=chat_format,
                             enable_thinking=enable_thinking, skip_think=skip_think)
    encoded = tokenizer.encode_batch([text for text, _ in segments])
    ids: list[int] = []
    mask: list[int] = []
    for (_, is_assistant), piece_ids in zip(segments, encoded):
        ids.extend(piece_ids)
        mask.extend([int(is_assistant)] * len(piece_ids))
    return ChatEncoding(ids=ids, assistant_mask=mask)
