"""Postprocessing model of the nemo-exaone ``inflight_batcher_llm`` repository (written for
this project; the interface follows TensorRT-LLM's postprocessing model): output token ids
(``[batch, beams, tokens]`` with ``[batch, beams]`` lengths) -> text, one string per beam.
Self-contained: numpy and ``tokenizers``, reading ``tokenizer.json`` from ``tokenizer_dir``.
"""

import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        from tokenizers import Tokenizer

        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config["parameters"].items()}
        self.tokenizer = Tokenizer.from_file(os.path.join(params["tokenizer_dir"],
                                                          "tokenizer.json"))
        self.skip_special = params.get("skip_special_tokens", "true").lower() == "true"

    def execute(self, requests):
        responses = []
        for request in requests:
            tokens = pb_utils.get_input_tensor_by_name(request, "TOKENS_BATCH").as_numpy()
            lengths = pb_utils.get_input_tensor_by_name(request, "SEQUENCE_LENGTH").as_numpy()
            texts = np.empty(lengths.shape, dtype=object)
            for b in range(tokens.shape[0]):
                for beam in range(tokens.shape[1]):
                    ids = tokens[b, beam, :int(lengths[b, beam])].tolist()
                    texts[b, beam] = self.tokenizer.decode(
                        ids, skip_special_tokens=self.skip_special).encode("utf-8")
            responses.append(pb_utils.InferenceResponse(
                output_tensors=[pb_utils.Tensor("OUTPUT", texts)]))
        return responses
