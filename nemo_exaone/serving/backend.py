"""What the Triton Python-backend model behind ``nemo-exaone serve`` does with a batch of
requests, kept free of ``triton_python_backend_utils`` so it can be read and tested alone.

The model answers to the request/response names of TensorRT-LLM's ``inflight_batcher_llm``
ensemble (``text_input``, ``max_tokens``, optional sampling inputs -> ``text_output``), so a
client written for a GPU deployment works unchanged against this CPU server. Every request row
is validated before anything runs: a malformed row fails its own request with a
:class:`RequestError` (sent as ``TritonError(INVALID_ARG)``) and never the batch it came in.
Rows with the same decoding settings share one :func:`~nemo_exaone.inference.generate` call.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

#: Inputs the served ``ensemble`` declares: name -> (Triton data type, required). Names and
#: types follow TensorRT-LLM's ensemble (``seed`` is today's name, ``random_seed`` the one
#: older releases used); ``exclude_input_in_output`` defaults to true here.
INPUTS: dict[str, tuple[str, bool]] = {
    "text_input": ("TYPE_STRING", True),
    "max_tokens": ("TYPE_INT32", True),
    "temperature": ("TYPE_FP32", False),
    "top_k": ("TYPE_INT32", False),
    "top_p": ("TYPE_FP32", False),
    "seed": ("TYPE_UINT64", False),
    "random_seed": ("TYPE_UINT64", False),
    "end_id": ("TYPE_INT32", False),
    "exclude_input_in_output": ("TYPE_BOOL", False),
}
OUTPUTS: dict[str, str] = {"text_output": "TYPE_STRING"}


class RequestError(ValueError):
    """A request the server refuses (bad value, shape or text): its message goes back to the
    client as an INVALID_ARG error; the server keeps serving."""


@dataclass(frozen=True)
class Row:
    """One prompt to run: its ids, prompt text and how to decode it."""

    prompt_ids: list[int]
    text: str
    config: object  # GenerationConfig
    include_prompt: bool


def _scalar(inputs: Mapping[str, np.ndarray | None], name: str, rows: int, row: int):
    """Row ``row`` of input ``name`` (None when absent); one value for all rows is accepted."""
    value = inputs.get(name)
    if value is None:
        return None
    flat = np.asarray(value).reshape(-1)
    if flat.size not in (1, rows):
        raise RequestError(f"input '{name}' has {flat.size} values for {rows} text_input rows "
                           "(give one per row, or one for all)")
    return flat[0] if flat.size == 1 else flat[row]


def _text(value, row: int) -> str:
    raw = value if isinstance(value, bytes) else (value.encode() if isinstance(value, str)
                                                  else None)
    if raw is None:
        raise RequestError(f"text_input row {row} is {type(value).__name__}, not bytes/text")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError(f"text_input row {row} is not valid UTF-8 ({exc.reason} at byte "
                           f"{exc.start})") from None
    if not text.strip():
        raise RequestError(f"text_input row {row} is empty")
    return text


def parse_request(inputs: Mapping[str, np.ndarray | None], *, encode, max_tokens_limit: int,
                  max_positions: int | None, stop_ids: Sequence[int]) -> list[Row]:
    """Validate one request's tensors and turn each ``text_input`` row into a :class:`Row`.

    ``encode`` maps prompt text to token ids (plain or chat format); ``stop_ids`` are the
    model's own stop tokens, to which a request's ``end_id`` is added. Raises
    :class:`RequestError` naming the input and the row for anything a client got wrong.
    """
    from nemo_exaone.config.errors import ConfigError
    from nemo_exaone.inference import GenerationConfig

    text_input = inputs.get("text_input")
    if text_input is None:
        raise RequestError("input 'text_input' is required")
    texts = np.asarray(text_input, dtype=object).reshape(-1)
    if texts.size == 0:
        raise RequestError("input 'text_input' has no rows")
    rows = texts.size
    out: list[Row] = []
    for row in range(rows):
        text = _text(texts[row], row)
        max_tokens = _scalar(inputs, "max_tokens", rows, row)
        if max_tokens is None:
            raise RequestError("input 'max_tokens' is required")
        max_tokens = int(max_tokens)
        if not 1 <= max_tokens <= max_tokens_limit:
            raise RequestError(f"max_tokens={max_tokens} (row {row}) must be in "
                               f"[1, {max_tokens_limit}] (the server's --max-tokens-limit)")
        temperature = _scalar(inputs, "temperature", rows, row)
        top_k = _scalar(inputs, "top_k", rows, row)
        top_p = _scalar(inputs, "top_p", rows, row)
        seed = _scalar(inputs, "seed", rows, row)
        if seed is None:
            seed = _scalar(inputs, "random_seed", rows, row)
        end_id = _scalar(inputs, "end_id", rows, row)
        exclude = _scalar(inputs, "exclude_input_in_output", rows, row)
        stops = list(stop_ids)
        if end_id is not None:
            if int(end_id) < 0:
                raise RequestError(f"end_id={int(end_id)} (row {row}) must be >= 0")
            stops = [int(end_id)] + [s for s in stops if s != int(end_id)]
        # TensorRT-LLM semantics: top_k == 1, or no sampling input at all, is greedy.
        greedy = (top_k is not None and int(top_k) == 1) or (
            temperature is None and top_p is None and top_k is None)
        try:
            config = GenerationConfig(
                max_new_tokens=max_tokens, greedy=greedy,
                temperature=1.0 if greedy or temperature is None else float(temperature),
                top_k=0 if greedy or top_k is None else int(top_k),
                top_p=0.0 if greedy or top_p is None else float(top_p),
                seed=1234 if seed is None else int(seed), stop_ids=tuple(stops))
        except ConfigError as exc:
            raise RequestError(f"row {row}: {exc}") from None
        ids = list(encode(text))
        if not ids:
            raise RequestError(f"text_input row {row} encodes to no tokens")
        if max_positions is not None and len(ids) + max_tokens > max_positions:
            raise RequestError(f"row {row}: prompt ({len(ids)} tokens) + max_tokens "
                               f"({max_tokens}) exceeds the model's context of {max_positions}")
        out.append(Row(ids, text, config, include_prompt=exclude is not None and not bool(exclude)))
    return out


class ServingModel:
    """The checkpoint loaded for generation plus the request handling around it."""

    def __init__(self, ckpt: str, *, tokenizer_dir: str | None = None,
                 max_tokens_limit: int = 256, chat: bool = False, max_batch_size: int = 8) -> None:
        from nemo_exaone.config.errors import InputError
        from nemo_exaone.data.chat_format import chat_format_for
        from nemo_exaone.inference import default_stop_ids
        from nemo_exaone.inference.loading import load_for_generation

        self.loaded = load_for_generation(ckpt, tokenizer_dir=tokenizer_dir)
        if self.loaded.tokenizer is None:
            raise InputError(f"checkpoint {ckpt} carries no tokenizer: the server takes and "
                             "returns text; pass --tokenizer DIR")
        self.tokenizer = self.loaded.tokenizer
        self.max_tokens_limit = max_tokens_limit
        self.max_batch_size = max_batch_size
        self.chat = chat
        # --chat renders in the checkpoint family's format (EXAONE 4.0 for a 4.0 model).
        self.chat_format = chat_format_for(self.loaded.arch.model_type)
        self.stop_ids = default_stop_ids(self.tokenizer, self.loaded.arch.eos_token_id)

    def encode(self, text: str) -> list[int]:
        if not self.chat:
            return self.tokenizer.encode(text)
        from nemo_exaone.data.chat_format import encode_chat

        return encode_chat(self.tokenizer, [{"role": "user", "content": text}],
                           add_generation_prompt=True, chat_format=self.chat_format).ids

    def run(self, batch: Sequence[Mapping[str, np.ndarray | None]]
            ) -> list[list[str] | Exception]:
        """One result per request, in order: its output texts (one per row) or the error."""
        from nemo_exaone.inference import generate

        parsed: list[list[Row] | Exception] = []
        for inputs in batch:
            try:
                parsed.append(parse_request(
                    inputs, encode=self.encode, max_tokens_limit=self.max_tokens_limit,
                    max_positions=self.loaded.arch.max_position_embeddings,
                    stop_ids=self.stop_ids))
            except RequestError as exc:
                parsed.append(exc)
        # Rows decoded alike run together (one generate call, static batches by length).
        groups: dict[object, list[tuple[int, int]]] = {}
        for r, rows in enumerate(parsed):
            if isinstance(rows, list):
                for i, row in enumerate(rows):
                    groups.setdefault(row.config, []).append((r, i))
        texts: dict[tuple[int, int], str] = {}
        failed: dict[int, Exception] = {}
        for config, members in groups.items():
            prompts = [parsed[r][i].prompt_ids for r, i in members]
            try:
                results = generate(self.loaded.chunks, prompts, config, tokenizer=self.tokenizer,
                                   max_batch_size=self.max_batch_size,
                                   max_position_embeddings=self.loaded.arch.max_position_embeddings)
            except Exception as exc:  # noqa: BLE001 - the request fails, the server goes on
                for r, _ in members:
                    failed[r] = RuntimeError(f"generation failed: {type(exc).__name__}: {exc}")
                continue
            for (r, i), result in zip(members, results):
                row = parsed[r][i]
                text = result.text or ""
                texts[(r, i)] = row.text + text if row.include_prompt else text
        out: list[list[str] | Exception] = []
        for r, rows in enumerate(parsed):
            if not isinstance(rows, list):
                out.append(rows)
            elif r in failed:
                out.append(failed[r])
            else:
                out.append([texts[(r, i)] for i in range(len(rows))])
        return out

