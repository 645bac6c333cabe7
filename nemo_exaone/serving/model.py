"""Triton Python-backend model for ``nemo-exaone serve`` (copied to ``ensemble/1/model.py`` of
the served repository). A thin shim: tensors in, :class:`~nemo_exaone.serving.backend.
ServingModel` runs them, ``text_output`` or a TritonError out.

The backend stub ignores PYTHONPATH, so the package's location comes from the model's
``package_root`` parameter and is put on ``sys.path`` here. Only importable inside Triton.
"""

from __future__ import annotations

import contextlib
import json
import locale
import sys

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    """Triton's entry points: ``initialize`` loads the checkpoint, ``execute`` answers a
    dynamically batched list of requests (one response each, in order)."""

    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        # The stub's embedded interpreter starts in the C locale (ASCII) whatever the
        # environment says, and torch reads its source templates in the locale's encoding.
        with contextlib.suppress(locale.Error):
            locale.setlocale(locale.LC_CTYPE, "C.UTF-8")
        if params["package_root"] not in sys.path:
            sys.path.insert(0, params["package_root"])
        from nemo_exaone.serving.backend import INPUTS, RequestError, ServingModel

        self._inputs = tuple(INPUTS)
        self._request_error = RequestError
        self._model = ServingModel(
            params["ckpt"], tokenizer_dir=params.get("tokenizer") or None,
            max_tokens_limit=int(params["max_tokens_limit"]), chat=params["chat"] == "true",
            max_batch_size=int(config.get("max_batch_size", 1) or 1))

    def execute(self, requests: list) -> list:
        batch = []
        for request in requests:
            tensors = {}
            for name in self._inputs:
                tensor = pb_utils.get_input_tensor_by_name(request, name)
                tensors[name] = None if tensor is None else tensor.as_numpy()
            batch.append(tensors)
        responses = []
        for result in self._model.run(batch):
            if isinstance(result, self._request_error):
                error = pb_utils.TritonError(str(result), pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=error))
            elif isinstance(result, Exception):
                error = pb_utils.TritonError(str(result), pb_utils.TritonError.INTERNAL)
                responses.append(pb_utils.InferenceResponse(error=error))
            else:
                out = np.array([t.encode("utf-8") for t in result], dtype=np.object_)
                responses.append(pb_utils.InferenceResponse(
                    [pb_utils.Tensor("text_output", out.reshape(len(result), 1))]))
        return responses

    def finalize(self) -> None:
        from nemo_exaone.runtime.distributed import destroy_distributed

        destroy_distributed()
