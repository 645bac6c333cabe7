"""BLS model of the nemo-exaone ``inflight_batcher_llm`` repository (written for this project;
its inputs follow TensorRT-LLM's tensorrt_llm_bls model): preprocessing -> tensorrt_llm ->
postprocessing as Triton business-logic calls in one model, so that a decoupled deployment can
stream text (``stream`` = true: one response per engine response; with ``accumulate_tokens``
each carries the text so far, else only the new piece).
"""

import json

import numpy as np
import triton_python_backend_utils as pb_utils

# BLS input -> tensorrt_llm input, passed through when the client sends it.
PASS_THROUGH = {
    "exclude_input_in_output": "exclude_input_in_output", "top_k": "runtime_top_k",
    "top_p": "runtime_top_p", "temperature": "temperature", "length_penalty": "len_penalty",
    "repetition_penalty": "repetition_penalty", "min_tokens": "min_tokens",
    "presence_penalty": "presence_penalty", "frequency_penalty": "frequency_penalty",
    "seed": "seed", "return_log_probs": "return_log_probs", "beam_width": "beam_width",
    "stream": "streaming",
}
PRE_INPUTS = {"text_input": "QUERY", "max_tokens": "REQUEST_OUTPUT_LEN",
              "bad_words": "BAD_WORDS_DICT", "stop_words": "STOP_WORDS_DICT",
              "end_id": "END_ID", "pad_id": "PAD_ID"}
PRE_TO_LLM = {"INPUT_ID": "input_ids", "REQUEST_INPUT_LEN": "input_lengths",
              "REQUEST_OUTPUT_LEN": "request_output_len", "BAD_WORDS_IDS": "bad_words_list",
              "STOP_WORDS_IDS": "stop_words_list", "OUT_END_ID": "end_id",
              "OUT_PAD_ID": "pad_id"}


def _check(response, step):
    if response.has_error():
        raise pb_utils.TritonModelException(f"{step}: {response.error().message()}")
    return response


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config["parameters"].items()}
        self.decoupled = pb_utils.using_decoupled_model_transaction_policy(config)
        self.accumulate = params.get("accumulate_tokens", "false").lower() == "true"
        self.llm = params.get("tensorrt_llm_model_name") or "tensorrt_llm"

    def _text(self, tokens, lengths):
        post = pb_utils.InferenceRequest(
            model_name="postprocessing", requested_output_names=["OUTPUT"],
            inputs=[pb_utils.Tensor("TOKENS_BATCH", tokens),
                    pb_utils.Tensor("SEQUENCE_LENGTH", lengths)])
        return pb_utils.get_output_tensor_by_name(_check(post.exec(), "postprocessing"),
                                                  "OUTPUT").as_numpy()

    def _response(self, llm_response, tokens, lengths):
        outputs = [pb_utils.Tensor("text_output", self._text(tokens, lengths))]
        for name in ("cum_log_probs", "output_log_probs"):
            tensor = pb_utils.get_output_tensor_by_name(llm_response, name)
            if tensor is not None:
                outputs.append(pb_utils.Tensor(name, tensor.as_numpy()))
        return pb_utils.InferenceResponse(output_tensors=outputs)

    def _run(self, request, send):
        pre_inputs = []
        for name, target in PRE_INPUTS.items():
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is not None:
                pre_inputs.append(pb_utils.Tensor(target, tensor.as_numpy()))
        pre = _check(pb_utils.InferenceRequest(
            model_name="preprocessing", requested_output_names=list(PRE_TO_LLM),
            inputs=pre_inputs).exec(), "preprocessing")
        llm_inputs = [pb_utils.Tensor(PRE_TO_LLM[n], pb_utils.get_output_tensor_by_name(
            pre, n).as_numpy()) for n in PRE_TO_LLM]
        for name, target in PASS_THROUGH.items():
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is not None:
                llm_inputs.append(pb_utils.Tensor(target, tensor.as_numpy()))
        stream = pb_utils.get_input_tensor_by_name(request, "stream")
        streaming = stream is not None and bool(stream.as_numpy().reshape(-1)[0])
        if streaming and not self.decoupled:
            raise pb_utils.TritonModelException(
                "stream=true needs the decoupled repository (export with --decoupled)")
        llm = pb_utils.InferenceRequest(
            model_name=self.llm, inputs=llm_inputs,
            requested_output_names=["output_ids", "sequence_length", "cum_log_probs",
                                    "output_log_probs"])
        if not streaming:
            response = _check(llm.exec(), self.llm)
            tokens = pb_utils.get_output_tensor_by_name(response, "output_ids").as_numpy()
            lengths = pb_utils.get_output_tensor_by_name(response, "sequence_length").as_numpy()
            send(self._response(response, tokens, lengths))
            return
        seen = None
        for response in llm.exec(decoupled=True):
            _check(response, self.llm)
            ids = pb_utils.get_output_tensor_by_name(response, "output_ids")
            if ids is None:  # the final, empty response of a decoupled stream
                continue
            tokens = ids.as_numpy()
            lengths = pb_utils.get_output_tensor_by_name(response, "sequence_length").as_numpy()
            if self.accumulate:
                piece = tokens[..., :int(lengths.max())]
                seen = piece if seen is None else np.concatenate([seen, piece], axis=-1)
                tokens, lengths = seen, np.full_like(lengths, seen.shape[-1])
            send(self._response(response, tokens, lengths))

    def execute(self, requests):
        responses = []
        for request in requests:
            if self.decoupled:
                sender = request.get_response_sender()
                try:
                    self._run(request, sender.send)
                except pb_utils.TritonModelException as exc:
                    sender.send(pb_utils.InferenceResponse(
                        error=pb_utils.TritonError(str(exc))))
                sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
            else:
                sent = []
                try:
                    self._run(request, sent.append)
                    responses.append(sent[-1])
                except pb_utils.TritonModelException as exc:
                    responses.append(pb_utils.InferenceResponse(
                        error=pb_utils.TritonError(str(exc))))
        return None if self.decoupled else responses
