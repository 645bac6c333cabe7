"""Preprocessing model of the nemo-exaone ``inflight_batcher_llm`` repository (written for
this project; the interface follows TensorRT-LLM's preprocessing model): prompt text -> token
ids, stop/bad word lists in TensorRT-LLM's ``[2, L]`` word-list layout, end/pad ids.

Self-contained (runs in NVIDIA's Triton TRT-LLM container, where nemo-exaone is not
installed): it needs numpy and the ``tokenizers`` package, and reads ``tokenizer.json`` and
``tokenizer_config.json`` from the ``tokenizer_dir`` parameter.
"""

import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils


def _special(config, key):
    value = config.get(key)
    return value.get("content") if isinstance(value, dict) else value


def word_list(words, encode):
    """TensorRT-LLM's word-list tensor for one request: row 0 the ids of all words end to end,
    row 1 the cumulative end offset of each word, padded with 0 / -1 to a common length."""
    ids, offsets = [], []
    for word in words:
        piece = encode(word)
        if piece:
            ids.extend(piece)
            offsets.append(len(ids))
    if not ids:
        return np.array([[0], [-1]], dtype=np.int32)
    width = max(len(ids), len(offsets))
    out = np.zeros((2, width), dtype=np.int32)
    out[1, :] = -1
    out[0, :len(ids)] = ids
    out[1, :len(offsets)] = offsets
    return out


def _pad_stack(rows, fill):
    width = max(r.shape[-1] for r in rows)
    out = np.full((len(rows),) + rows[0].shape[:-1] + (width,), fill, dtype=np.int32)
    for i, r in enumerate(rows):
        out[i, ..., :r.shape[-1]] = r
    return out


class TritonPythonModel:
    def initialize(self, args):
        from tokenizers import Tokenizer

        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config["parameters"].items()}
        directory = params["tokenizer_dir"]
        self.tokenizer = Tokenizer.from_file(os.path.join(directory, "tokenizer.json"))
        with open(os.path.join(directory, "tokenizer_config.json"), encoding="utf-8") as f:
            tok_config = json.load(f)
        self.add_special_tokens = params.get("add_special_tokens", "false").lower() == "true"
        eos = _special(tok_config, "eos_token")
        pad = _special(tok_config, "pad_token") or eos
        self.end_id = self.tokenizer.token_to_id(eos) if eos else None
        self.pad_id = self.tokenizer.token_to_id(pad) if pad else self.end_id
        if self.end_id is None:
            raise pb_utils.TritonModelException(
                f"{directory}/tokenizer_config.json: eos_token {eos!r} is not in tokenizer.json")

    def _encode(self, text):
        return self.tokenizer.encode(text, add_special_tokens=self.add_special_tokens).ids

    def _words(self, request, name, batch):
        tensor = pb_utils.get_input_tensor_by_name(request, name)
        if tensor is None:
            return _pad_stack([word_list([], self._encode)] * batch, -1)
        rows = []
        for words in tensor.as_numpy():
            rows.append(word_list([w.decode("utf-8") for w in np.atleast_1d(words) if w],
                                  self._encode))
        stacked = _pad_stack(rows, 0)
        for i, r in enumerate(rows):  # offsets pad with -1
            stacked[i, 1, r.shape[1]:] = -1
        return stacked

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                query = pb_utils.get_input_tensor_by_name(request, "QUERY").as_numpy()
                out_len = pb_utils.get_input_tensor_by_name(request, "REQUEST_OUTPUT_LEN").as_numpy()
                batch = query.shape[0]
                ids = [np.array(self._encode(q[0].decode("utf-8")), dtype=np.int32) for q in query]
                if any(len(i) == 0 for i in ids):
                    raise ValueError("QUERY encodes to no tokens")
                end = pb_utils.get_input_tensor_by_name(request, "END_ID")
                pad = pb_utils.get_input_tensor_by_name(request, "PAD_ID")
                end_ids = (end.as_numpy() if end is not None
                           else np.full((batch, 1), self.end_id, dtype=np.int32))
                pad_ids = (pad.as_numpy() if pad is not None
                           else np.full((batch, 1), self.pad_id, dtype=np.int32))
                tensors = [
                    pb_utils.Tensor("INPUT_ID", _pad_stack(ids, int(pad_ids.reshape(-1)[0]))),
                    pb_utils.Tensor("REQUEST_INPUT_LEN",
                                    np.array([[len(i)] for i in ids], dtype=np.int32)),
                    pb_utils.Tensor("BAD_WORDS_IDS", self._words(request, "BAD_WORDS_DICT", batch)),
                    pb_utils.Tensor("STOP_WORDS_IDS",
                                    self._words(request, "STOP_WORDS_DICT", batch)),
                    pb_utils.Tensor("REQUEST_OUTPUT_LEN", out_len.astype(np.int32)),
                    pb_utils.Tensor("OUT_END_ID", end_ids.astype(np.int32)),
                    pb_utils.Tensor("OUT_PAD_ID", pad_ids.astype(np.int32)),
                ]
                responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            except (ValueError, UnicodeDecodeError) as exc:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(
                    f"preprocessing: {exc}", pb_utils.TritonError.INVALID_ARG)))
        return responses
