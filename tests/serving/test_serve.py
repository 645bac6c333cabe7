"""``nemo-exaone serve`` through the real Triton server from the nvidia-pytriton wheel: one
server (a separate ``nemo-exaone serve`` process) for the module, clients from tritonclient
(HTTP and gRPC) and Triton's HTTP generate extension; the reference is ``nemo-exaone
generate`` run as another process on the same checkpoint."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from tiny import start_serve, tiny_checkpoint, wait_ready

PROMPT = "hello world, the model speaks"
NEW = 6
LIMIT = 32


def _workspaces(pid: int) -> list[Path]:
    return list(Path(tempfile.gettempdir()).glob(f".nemo-exaone-serve.tmp-{pid}-*"))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    ckpt = tiny_checkpoint(root)
    info = start_serve(root, ckpt, "--max-batch-size", "16", "--max-tokens-limit", str(LIMIT))
    proc = info["proc"]
    # The reference runs while the server loads (two processes, two cores).
    reference = subprocess.Popen(
        [sys.executable, "-m", "nemo_exaone.cli", "generate", "--ckpt", str(ckpt), "--prompt",
         PROMPT, "--max-new-tokens", str(NEW), "--json"], env=info["env"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_ready(info)
    out, err = reference.communicate(timeout=240)
    assert reference.returncode == 0, err[-3000:]
    info.update(expected=json.loads(out.strip().splitlines()[-1]), ckpt=ckpt)
    yield info
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def _generate(port: int, body: bytes | dict, path: str = "generate") -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v2/models/ensemble/{path}",
                                     data=data, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def _inputs(module, text: bytes, max_tokens: int, dtype=np.int32, names=("text_input",
                                                                          "max_tokens")):
    tensors = []
    if "text_input" in names:
        t = module.InferInput("text_input", [1, 1], "BYTES")
        t.set_data_from_numpy(np.array([[text]], dtype=object))
        tensors.append(t)
    if "max_tokens" in names:
        m = module.InferInput("max_tokens", [1, 1], "INT32" if dtype is np.int32 else "FP32")
        m.set_data_from_numpy(np.array([[max_tokens]], dtype=dtype))
        tensors.append(m)
    return tensors


def test_greedy_text_output_equals_generate(server):
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    expected = server["expected"]["text"]
    assert server["expected"]["token_ids"], "the reference generated nothing"
    status, body = _generate(server["http"], {"text_input": PROMPT, "max_tokens": NEW})
    assert status == 200, body
    assert body["text_output"] == expected
    # generate_stream (server-sent events) is relayed as it comes
    request = urllib.request.Request(
        f"http://127.0.0.1:{server['http']}/v2/models/ensemble/generate_stream",
        data=json.dumps({"text_input": PROMPT, "max_tokens": NEW}).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=60) as response:
        events = response.read().decode().split("\n\n")
    assert json.loads(events[0].removeprefix("data: "))["text_output"] == expected
    with httpclient.InferenceServerClient(f"127.0.0.1:{server['http']}") as client:
        result = client.infer("ensemble", _inputs(httpclient, PROMPT.encode(), NEW))
        assert result.as_numpy("text_output")[0][0].decode() == expected
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server['grpc']}")
    try:
        result = client.infer("ensemble", _inputs(grpcclient, PROMPT.encode(), NEW))
        assert result.as_numpy("text_output")[0][0].decode() == expected
        # TensorRT-LLM's exclude_input_in_output=false: the prompt comes back in front.
        flag = grpcclient.InferInput("exclude_input_in_output", [1, 1], "BOOL")
        flag.set_data_from_numpy(np.array([[False]]))
        result = client.infer("ensemble", _inputs(grpcclient, PROMPT.encode(), NEW) + [flag])
        assert result.as_numpy("text_output")[0][0].decode() == PROMPT + expected
    finally:
        client.close()


def test_malformed_requests_get_errors_and_the_server_keeps_serving(server):
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    cases = {
        "missing max_tokens": _inputs(grpcclient, b"hi", 4, names=("text_input",)),
        "missing text_input": _inputs(grpcclient, b"hi", 4, names=("max_tokens",)),
        "max_tokens as FP32": _inputs(grpcclient, b"hi", 4, dtype=np.float32),
        "empty text": _inputs(grpcclient, b"", 4),
        "blank text": _inputs(grpcclient, b"  \n", 4),
        "max_tokens 0": _inputs(grpcclient, b"hi", 0),
        "max_tokens -3": _inputs(grpcclient, b"hi", -3),
        "max_tokens above the limit": _inputs(grpcclient, b"hi", LIMIT + 1),
        "not UTF-8": _inputs(grpcclient, b"\xff\xfe bad", 4),
    }
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server['grpc']}")
    try:
        for name, inputs in cases.items():
            with pytest.raises(InferenceServerException) as info:
                client.infer("ensemble", inputs)
            message = str(info.value)
            if name in ("empty text", "blank text", "not UTF-8") or name.startswith("max_tokens "):
                assert "INVALID_ARG" in (info.value.status() or ""), (name, message)
            # after every refusal, a good request is still answered
            ok = client.infer("ensemble", _inputs(grpcclient, PROMPT.encode(), NEW))
            assert ok.as_numpy("text_output")[0][0].decode() == server["expected"]["text"], name
    finally:
        client.close()
    for body in (b"not json", {"text_input": 5, "max_tokens": 2},
                 {"text_input": "hi", "max_tokens": "two"}, {"text_input": "hi"},
                 {"text_input": "", "max_tokens": 2}, {"text_input": "hi", "max_tokens": 0},
                 {"text_input": "hi", "max_tokens": LIMIT + 1}):
        status, answer = _generate(server["http"], body)
        assert status >= 400 and "error" in answer, (body, status, answer)
    status, answer = _generate(server["http"], {"text_input": "hi", "max_tokens": LIMIT + 1})
    assert status == 400 and "max-tokens-limit" in answer["error"]
    # Beyond 32 bits Triton would wrap the number (2**32 + 1 -> 1, answered): the HTTP front
    # refuses it, naming the field, on generate and generate_stream alike.
    for body, error in (
            ({"max_tokens": 2**32 + 1}, "max_tokens=4294967297 is outside [1, 2147483647]"),
            ({"max_tokens": [2**32 + 2]}, "max_tokens=4294967298 is outside [1, 2147483647]"),
            ({"max_tokens": 2**31}, "max_tokens=2147483648 is outside [1, 2147483647]"),
            ({"max_tokens": 1e10}, "max_tokens must be an integer"),
            ({"max_tokens": 2, "top_k": 2**32 + 1}, "top_k=4294967297 is outside"),
            ({"max_tokens": 2, "seed": -1}, "seed=-1 is outside [0, 18446744073709551615]")):
        for path in ("generate", "generate_stream"):
            status, answer = _generate(server["http"], {"text_input": "hi", **body}, path)
            assert status == 400 and error in answer["error"], (body, path, status, answer)
    assert server["proc"].poll() is None
    assert _generate(server["http"], {"text_input": PROMPT, "max_tokens": NEW})[0] == 200


def test_sixteen_concurrent_clients(server):
    """16 clients x 20 requests, all answered; one prompt for all, so that dynamic batches
    hold one length group each, and batching must not change the (greedy) answer."""
    import tritonclient.http as httpclient

    def client_run(_: int) -> list[str]:
        with httpclient.InferenceServerClient(f"127.0.0.1:{server['http']}") as client:
            return [client.infer("ensemble", _inputs(httpclient, PROMPT.encode(), 2))
                    .as_numpy("text_output")[0][0].decode() for _ in range(20)]

    with ThreadPoolExecutor(16) as pool:
        results = [text for texts in pool.map(client_run, range(16)) for text in texts]
    assert len(results) == 320
    assert set(results) == {results[0]}


def test_sigterm_drains_and_leaves_no_workspace(server):
    proc = server["proc"]
    assert _workspaces(proc.pid), "the running server's workspace was not found"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=90) == 0
    assert _workspaces(proc.pid) == []
    assert list(Path("/dev/shm").glob(f"nemo_exaone_serve_{proc.pid}_*")) == []


def test_stale_workspaces_of_dead_launchers_are_removed(tmp_path):
    from nemo_exaone.serving.triton import remove_stale

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".nemo-exaone-serve.tmp-{dead.pid}-0123abcd"
    (stale / "repo").mkdir(parents=True)
    live = tmp_path / f".nemo-exaone-serve.tmp-{os.getpid()}-0123abcd"
    live.mkdir()
    shm = tmp_path / "shm"
    shm.mkdir()
    (shm / f"nemo_exaone_serve_{dead.pid}_1_region").write_bytes(b"x")
    (shm / f"nemo_exaone_serve_{os.getpid()}_1_region").write_bytes(b"x")
    removed = remove_stale(tmp_path, shm)
    assert not stale.exists() and live.exists()
    assert sorted(p.name for p in shm.iterdir()) == [f"nemo_exaone_serve_{os.getpid()}_1_region"]
    assert len(removed) == 2
    shutil.rmtree(live)


def test_request_parsing_follows_tensorrt_llm_semantics():
    """No sampling input or top_k=1: greedy; end_id joins the stop ids first; a value per row
    or one for all; top_k with top_p (Megatron samples with one) and ragged inputs refused."""
    from nemo_exaone.serving.backend import RequestError, parse_request

    def parse(**inputs):
        tensors = {"text_input": np.array([[b"ab"], [b"cd"]], dtype=object),
                   "max_tokens": np.array([[4]], dtype=np.int32)}
        tensors.update({k: np.asarray(v) for k, v in inputs.items()})
        return parse_request(tensors, encode=lambda t: [ord(c) for c in t], max_tokens_limit=8,
                             max_positions=7, stop_ids=(3,))

    rows = parse()
    assert [r.prompt_ids for r in rows] == [[97, 98], [99, 100]]
    assert all(r.config.greedy and r.config.stop_ids == (3,) for r in rows)
    assert not rows[0].include_prompt
    rows = parse(temperature=[[0.5], [0.7]], end_id=[[9]], exclude_input_in_output=[[False]])
    assert [r.config.temperature for r in rows] == [0.5, pytest.approx(0.7)]
    assert not rows[0].config.greedy and rows[0].config.stop_ids == (9, 3)
    assert rows[1].include_prompt
    assert parse(top_k=[[1]], temperature=[[0.5]])[0].config.greedy
    assert parse(top_k=[[5]], seed=np.array([[7]], dtype=np.uint64))[0].config.seed == 7
    for bad, match in [({"top_k": [[5]], "top_p": [[0.9]]}, "top_k=5 and top_p=0.9"),
                       ({"max_tokens": np.array([[1], [2], [3]])}, "3 values for 2"),
                       ({"max_tokens": np.array([[6]])}, "exceeds the model's context of 7"),
                       ({"end_id": [[-1]]}, "end_id=-1")]:
        with pytest.raises(RequestError, match=match):
            parse(**bad)


def test_front_checks_only_generate_integers():
    """The HTTP front's check: integer fields of generate requests against their types'
    ranges; anything it cannot read as a JSON object is left to Triton."""
    from nemo_exaone.serving.front import GENERATE_PATH, check_generate_body

    def check(request) -> str | None:
        return check_generate_body(json.dumps(request).encode())

    assert check({"text_input": "hi", "max_tokens": 2**31 - 1, "top_k": -(2**31),
                  "end_id": 2**31 - 1, "seed": 2**64 - 1, "random_seed": 0}) is None
    assert check({"max_tokens": 0}) == "max_tokens=0 is outside [1, 2147483647] (an INT32 input)"
    assert check({"max_tokens": 4, "end_id": 2**31}).startswith("end_id=2147483648 is outside")
    assert check({"seed": 2**64}) == \
        "seed=18446744073709551616 is outside [0, 18446744073709551615] (a UINT64 input)"
    assert check({"max_tokens": [[3], [2**40]]}).startswith("max_tokens=1099511627776")
    assert check({"max_tokens": 4.0}) == "max_tokens must be an integer, got 4.0"
    assert check({"max_tokens": "4"}) == 'max_tokens must be an integer, got "4"'
    assert check({"max_tokens": None}) == "max_tokens must be an integer, got null"
    for unreadable in (b"not json", b"[1, 2]", b"\xff"):
        assert check_generate_body(unreadable) is None
    for path in ("/v2/models/ensemble/generate", "/v2/models/ensemble/generate_stream",
                 "/v2/models/ensemble/versions/1/generate", "/v2/models/m/generate?x=1"):
        assert GENERATE_PATH.match(path), path
    for path in ("/v2/models/ensemble/infer", "/v2/models/ensemble", "/v2/health/ready"):
        assert not GENERATE_PATH.match(path), path


def test_serve_refuses_a_busy_http_port_before_loading(tmp_path, capsys):
    import socket

    from nemo_exaone.cli import main

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", "--ckpt", str(tmp_path / "absent"), "--http-port",
                     str(port)]) == 2
    err = capsys.readouterr().err
    assert f"config error: --http-port {port}: cannot listen on 127.0.0.1" in err
