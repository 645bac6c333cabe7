"""``nemo-exaone export triton-repo``: every generated ``config.pbtxt`` parses as Triton's own
ModelConfig protobuf, no template parameter is left, the ensemble's names/types are
TensorRT-LLM's and its step wiring is consistent; and the repository's Python models
(preprocessing, postprocessing, BLS) and the ensemble run in the real Triton server with a
Python stand-in for the engine (the only piece that needs a GPU)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from google.protobuf import text_format
from tiny import EOT, write_tokenizer
from tritonclient.grpc import model_config_pb2

ROOT = Path(__file__).resolve().parents[2]
DT = model_config_pb2.DataType


def _parse(path: Path):
    config = model_config_pb2.ModelConfig()
    text_format.Parse(path.read_text(), config)
    return config


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nemo_exaone.cli", "export", "triton-repo",
                           *args], capture_output=True, text=True, cwd=ROOT, timeout=120)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("triton_repo")
    write_tokenizer(root / "tokenizer")
    engine = root / "engine"
    engine.mkdir()
    (engine / "config.json").write_text(json.dumps({"build_config": {"max_batch_size": 16}}))
    (engine / "rank0.engine").write_bytes(b"engine bytes stand-in")
    return {"root": root, "tokenizer": root / "tokenizer", "engine": engine}


def _check_wiring(repo: Path, ensemble) -> None:
    """Every step calls a model of the repository; every input_map key is an input of that
    model and its value an ensemble input or an earlier step's output; every output_map key
    is an output of that model; each model's required inputs are fed; the ensemble's outputs
    are all produced."""
    available = {i.name: i.data_type for i in ensemble.input}
    for step in ensemble.ensemble_scheduling.step:
        model = _parse(repo / step.model_name / "config.pbtxt")
        declared_in = {i.name: i for i in model.input}
        declared_out = {o.name: o for o in model.output}
        for key, value in step.input_map.items():
            assert key in declared_in, (step.model_name, key)
            assert value in available, (step.model_name, value)
            assert available[value] == declared_in[key].data_type, (step.model_name, key)
        required = {n for n, i in declared_in.items() if not i.optional}
        assert required <= set(step.input_map), (step.model_name, required - set(step.input_map))
        for key, value in step.output_map.items():
            assert key in declared_out, (step.model_name, key)
            available[value] = declared_out[key].data_type
    for output in ensemble.output:
        assert available.get(output.name) == output.data_type, output.name


def test_engine_flow_repository(inputs, tmp_path):
    out = tmp_path / "repo"
    run = _cli("--engine", str(inputs["engine"]), "--tokenizer", str(inputs["tokenizer"]),
               "--out", str(out), "--max-batch-size", "16", "--bls", "--decoupled")
    assert run.returncode == 0, run.stderr
    models = sorted(p.name for p in out.iterdir())
    assert models == ["ensemble", "postprocessing", "preprocessing", "tensorrt_llm",
                      "tensorrt_llm_bls"]
    for path in out.rglob("*"):
        if path.is_file():
            assert "${" not in path.read_text(), path
    configs = {m: _parse(out / m / "config.pbtxt") for m in models}
    for name, config in configs.items():
        assert config.name == name and config.max_batch_size == 16
    ensemble = configs["ensemble"]
    assert ensemble.platform == "ensemble"
    ins = {i.name: (i.data_type, list(i.dims), i.optional) for i in ensemble.input}
    assert ins["text_input"] == (DT.TYPE_STRING, [1], False)
    assert ins["max_tokens"] == (DT.TYPE_INT32, [1], False)
    for name, dtype in {"temperature": DT.TYPE_FP32, "top_k": DT.TYPE_INT32,
                        "top_p": DT.TYPE_FP32, "end_id": DT.TYPE_INT32, "seed": DT.TYPE_UINT64,
                        "stream": DT.TYPE_BOOL, "stop_words": DT.TYPE_STRING}.items():
        assert ins[name][0] == dtype and ins[name][2], name
    outs = {o.name: o.data_type for o in ensemble.output}
    assert outs["text_output"] == DT.TYPE_STRING
    _check_wiring(out, ensemble)
    llm = configs["tensorrt_llm"]
    assert llm.backend == "tensorrtllm" and llm.model_transaction_policy.decoupled
    assert llm.parameters["gpt_model_path"].string_value == str(inputs["engine"].resolve())
    assert llm.parameters["gpt_model_type"].string_value == "inflight_fused_batching"
    assert configs["tensorrt_llm_bls"].model_transaction_policy.decoupled
    assert (configs["preprocessing"].parameters["tokenizer_dir"].string_value
            == str(inputs["tokenizer"].resolve()))
    # Same inputs under the BLS model as under the ensemble, for the names both have.
    bls = {i.name: i.data_type for i in configs["tensorrt_llm_bls"].input}
    assert all(bls[n] == ins[n][0] for n in bls)


def test_engine_flow_refusals(inputs, tmp_path):
    run = _cli("--engine", str(tmp_path), "--tokenizer", str(inputs["tokenizer"]), "--out",
               str(tmp_path / "r"))
    assert run.returncode != 0 and "no config.json" in run.stderr
    run = _cli("--engine", str(inputs["engine"]), "--tokenizer", str(inputs["tokenizer"]),
               "--out", str(tmp_path / "r"), "--max-batch-size", "32")
    assert run.returncode != 0 and "max_batch_size=16" in run.stderr
    assert not (tmp_path / "r").exists()


def test_unfilled_parameter_is_refused():
    from nemo_exaone.config.errors import ConfigError
    from nemo_exaone.export.triton_repo import fill_template

    assert fill_template("a: ${x}\nb: ${y}", {"x": "1", "y": "2"}, source="t") == "a: 1\nb: 2"
    with pytest.raises(ConfigError, match=r"t: .*line 2: \$\{y\}"):
        fill_template("a: ${x}\nb: ${y}", {"x": "1"}, source="t")


def test_llmapi_repository(tmp_path):
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    source = tmp_path / "release"
    source.mkdir()
    (source / "model.py").write_text("# the release's backend model\n")
    (source / "helpers.py").write_text("# its helpers\n")
    out = tmp_path / "repo"
    run = _cli("--backend", "llmapi", "--hf", str(hf), "--out", str(out), "--tp", "2",
               "--backend-source", str(source))
    assert run.returncode == 0, run.stderr
    config = _parse(out / "tensorrt_llm" / "config.pbtxt")
    assert config.name == "tensorrt_llm" and config.backend == "python"
    ins = {i.name: i.data_type for i in config.input}
    assert ins["text_input"] == DT.TYPE_STRING
    assert ins["sampling_param_max_tokens"] == DT.TYPE_INT32
    assert {o.name for o in config.output} >= {"text_output"}
    settings = yaml.safe_load((out / "tensorrt_llm" / "1" / "model.yaml").read_text())
    assert settings["model"] == str(hf.resolve())
    assert settings["backend"] == "pytorch" and settings["tensor_parallel_size"] == 2
    assert settings["triton_config"] == {"max_batch_size": 0, "decoupled": False}
    assert (out / "tensorrt_llm" / "1" / "model.py").read_text().startswith("# the release")
    exaone = tmp_path / "exaone"
    exaone.mkdir()
    (exaone / "config.json").write_text(json.dumps({"architectures": ["ExaoneForCausalLM"]}))
    run = _cli("--backend", "llmapi", "--hf", str(exaone), "--out", str(tmp_path / "r2"))
    assert run.returncode != 0 and "--arch llama" in run.stderr


STAND_IN = '''
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    """Test stand-in for the engine: "generates" the prompt's ids back."""

    def execute(self, requests):
        responses = []
        for request in requests:
            ids = pb_utils.get_input_tensor_by_name(request, "input_ids").as_numpy()
            lengths = pb_utils.get_input_tensor_by_name(request, "input_lengths").as_numpy()
            b = ids.shape[0]
            z = np.zeros
            outs = {"output_ids": ids.reshape(b, 1, -1).astype(np.int32),
                    "sequence_length": lengths.reshape(b, 1).astype(np.int32),
                    "cum_log_probs": z((b, 1), np.float32),
                    "output_log_probs": z((b, 1, 1), np.float32),
                    "context_logits": z((b, 1, 1), np.float32),
                    "generation_logits": z((b, 1, 1, 1), np.float32),
                    "batch_index": z((b, 1), np.int32), "sequence_index": z((b, 1), np.int32)}
            responses.append(pb_utils.InferenceResponse(
                [pb_utils.Tensor(k, v) for k, v in outs.items()]))
        return responses
'''


def test_python_models_and_ensemble_run_in_triton(inputs, tmp_path):
    """The ensemble's wiring, our pre/postprocessing and the BLS model, in the real server."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    from nemo_exaone.export.triton_repo import InflightBatcherOptions, write_inflight_batcher_repo
    from nemo_exaone.runtime.distributed import free_port
    from nemo_exaone.serving.triton import TritonServer

    repo = write_inflight_batcher_repo(
        tmp_path / "repo", engine=inputs["engine"], tokenizer=inputs["tokenizer"],
        options=InflightBatcherOptions(max_batch_size=4, bls=True, triton_backend="python"))
    (repo / "tensorrt_llm" / "1" / "model.py").write_text(STAND_IN)
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(inputs["tokenizer"] / "tokenizer.json"))
    text = "hello world, the quick fox"
    with TritonServer(repo, http_port=free_port(), grpc_port=free_port(),
                      log_file=tmp_path / "server.log", ready_timeout=120) as server:
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
        try:
            def tensor(name, value, dtype):
                t = grpcclient.InferInput(name, list(value.shape), dtype)
                t.set_data_from_numpy(value)
                return t

            query = [tensor("QUERY", np.array([[text.encode()]], dtype=object), "BYTES"),
                     tensor("REQUEST_OUTPUT_LEN", np.array([[4]], dtype=np.int32), "INT32"),
                     tensor("STOP_WORDS_DICT", np.array([[b"fox", b"the quick"]], dtype=object),
                            "BYTES")]
            pre = client.infer("preprocessing", query)
            assert pre.as_numpy("INPUT_ID")[0].tolist() == tok.encode(text).ids
            assert pre.as_numpy("REQUEST_INPUT_LEN").tolist() == [[len(tok.encode(text).ids)]]
            assert pre.as_numpy("OUT_END_ID").tolist() == [[EOT]]
            fox, quick = tok.encode("fox").ids, tok.encode("the quick").ids
            stops = pre.as_numpy("STOP_WORDS_IDS")[0]
            assert stops[0][:len(fox) + len(quick)].tolist() == fox + quick
            assert stops[1][:2].tolist() == [len(fox), len(fox) + len(quick)]
            for model in ("ensemble", "tensorrt_llm_bls"):
                result = client.infer(model, [
                    tensor("text_input", np.array([[text.encode()]], dtype=object), "BYTES"),
                    tensor("max_tokens", np.array([[4]], dtype=np.int32), "INT32")])
                assert result.as_numpy("text_output").reshape(-1)[0].decode() == text, model
            with pytest.raises(InferenceServerException, match="max_tokens"):
                client.infer("ensemble", [
                    tensor("text_input", np.array([[text.encode()]], dtype=object), "BYTES")])
        finally:
            client.close()
    assert server.workspace is None
