"""Serving latency and throughput on loopback: ``nemo-exaone serve`` (the Triton server of the
nvidia-pytriton wheel, our Python-backend ``ensemble``) under concurrent tritonclient HTTP
clients, each a thread of this process (which never loads a model).

A random checkpoint of the ``tiny`` preset with a byte-level BPE tokenizer trained here is
written (or ``--ckpt`` one is served); the server is started as its own process, warmed up,
then ``--clients`` clients send ``--requests`` requests each (same prompt, ``--max-tokens``
greedy tokens; one prompt for all so dynamic batches hold one length group). Reported:
p50/p95/max request latency, requests per second over the whole run, and the same for one
client alone (no batching to gain). Run with the serve environment::

    PY=$(scripts/setup_serve.sh); $PY benchmarks/serve.py            # ~2 minutes
    $PY benchmarks/serve.py --clients 16 --requests 20 --max-tokens 8
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "hello world, the model speaks"


def _tiny_checkpoint(root: Path) -> Path:
    sys.path.insert(0, str(ROOT / "tests" / "serving"))
    from tiny import tiny_checkpoint

    return tiny_checkpoint(root)


def _wait_ready(proc: subprocess.Popen, port: int, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"nemo-exaone serve exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2):
                return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.3)
    raise TimeoutError("server not ready")


def _load(port: int, clients: int, requests: int, max_tokens: int) -> dict:
    import tritonclient.http as httpclient

    def one_client(_: int) -> list[float]:
        latencies = []
        with httpclient.InferenceServerClient(f"127.0.0.1:{port}") as client:
            text = httpclient.InferInput("text_input", [1, 1], "BYTES")
            text.set_data_from_numpy(np.array([[PROMPT.encode()]], dtype=object))
            count = httpclient.InferInput("max_tokens", [1, 1], "INT32")
            count.set_data_from_numpy(np.array([[max_tokens]], dtype=np.int32))
            for _ in range(requests):
                start = time.perf_counter()
                client.infer("ensemble", [text, count])
                latencies.append(time.perf_counter() - start)
        return latencies

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = sorted(x for lat in pool.map(one_client, range(clients)) for x in lat)
    wall = time.perf_counter() - start
    q = statistics.quantiles(latencies, n=100)
    return {"clients": clients, "requests": len(latencies), "p50_ms": q[49] * 1e3,
            "p95_ms": q[94] * 1e3, "max_ms": latencies[-1] * 1e3,
            "requests_per_s": len(latencies) / wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", type=Path, help="serve this checkpoint (default: tiny random)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=20, help="per client")
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--max-batch-size", type=int, default=16)
    args = parser.parse_args()
    from nemo_exaone.runtime.distributed import free_port

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = args.ckpt or _tiny_checkpoint(Path(tmp))
        http, grpc = free_port(), free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "nemo_exaone.cli", "serve", "--ckpt", str(ckpt),
             "--http-port", str(http), "--grpc-port", str(grpc), "--max-batch-size",
             str(args.max_batch_size), "--log-file", str(Path(tmp) / "server.log")],
            env=dict(os.environ, PYTHONPATH=str(ROOT)), stderr=subprocess.DEVNULL)
        try:
            _wait_ready(proc, http)
            _load(http, 1, 3, args.max_tokens)  # warm-up
            single = _load(http, 1, args.requests, args.max_tokens)
            loaded = _load(http, args.clients, args.requests, args.max_tokens)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=120)
    print(f"{'clients':>8} {'requests':>9} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'req/s':>7}")
    for row in (single, loaded):
        print(f"{row['clients']:>8} {row['requests']:>9} {row['p50_ms']:>8.1f} "
              f"{row['p95_ms']:>8.1f} {row['max_ms']:>8.1f} {row['requests_per_s']:>7.1f}")
    print(json.dumps({"max_tokens": args.max_tokens, "load_average": os.getloadavg(),
                      "single": single, "concurrent": loaded}))


if __name__ == "__main__":
    main()
