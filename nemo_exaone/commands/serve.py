"""``nemo-exaone serve``: serve a checkpoint through a real Triton Inference Server on CPU.

The server is the one bundled in the ``nvidia-pytriton`` wheel (install it with
``scripts/setup_serve.sh``, which builds ``.venv-serve``: that wheel pins numpy<2). It hosts
one Python-backend model named ``ensemble`` with the request/response names of TensorRT-LLM's
``inflight_batcher_llm`` ensemble, so clients do not change between this CPU server and a GPU
deployment::

    curl -X POST 127.0.0.1:8000/v2/models/ensemble/generate \\
         -d '{"text_input": "Hello", "max_tokens": 16}'

Inputs: ``text_input`` (STRING), ``max_tokens`` (INT32, 1..--max-tokens-limit); optional
``temperature``/``top_p`` (FP32), ``top_k`` (INT32; 1 = greedy), ``seed``/``random_seed``
(UINT64), ``end_id`` (INT32), ``exclude_input_in_output`` (BOOL, default true). Greedy unless a
sampling input is given. Output: ``text_output`` (STRING). Requests are batched dynamically.
``max_tokens`` is INT32 as in TensorRT-LLM's ensemble (so its clients work unchanged). Triton
would wrap a JSON number beyond 32 bits before the model sees it, so the HTTP port is a small
front (:mod:`nemo_exaone.serving.front`) that refuses out-of-range integers of generate
requests (400, naming the field) and relays everything else to Triton on a private port.
Listens on 127.0.0.1 only. SIGINT/SIGTERM drain the server and remove its workspace.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
from pathlib import Path


def _front(port: int, backend_port: int):
    from nemo_exaone.config.errors import ConfigError
    from nemo_exaone.serving.front import FrontServer

    try:
        return FrontServer(port, backend_port)
    except OSError as exc:
        raise ConfigError(f"--http-port {port}: cannot listen on 127.0.0.1 ({exc.strerror})"
                          ) from None


def run(args: argparse.Namespace) -> int:
    from nemo_exaone.checkpoint.locate import locate_checkpoint
    from nemo_exaone.inference.loading import load_tokenizer_for
    from nemo_exaone.runtime.distributed import free_port
    from nemo_exaone.serving.repository import write_serve_repository
    from nemo_exaone.serving.triton import TritonServer, find_triton

    find_triton()  # fail before anything else when the server is not installed
    _front(args.http_port, 0).server_close()  # --http-port is free (before the model loads)
    found = locate_checkpoint(args.ckpt)  # names what is wrong with --ckpt, before the server
    load_tokenizer_for(found.path, args.tokenizer)
    with tempfile.TemporaryDirectory(prefix="nemo-exaone-repo-") as staging:
        repo = write_serve_repository(
            Path(staging) / "repo", ckpt=found.path, tokenizer=args.tokenizer,
            max_batch_size=args.max_batch_size, max_tokens_limit=args.max_tokens_limit,
            chat=args.chat, queue_delay_us=args.queue_delay_us)
        # Triton's HTTP endpoint is private; the front answers on --http-port.
        server = TritonServer(repo, http_port=free_port(), grpc_port=args.grpc_port,
                              log_file=args.log_file, ready_timeout=args.ready_timeout)
        stopping = []

        def _stop(signum, _frame):
            stopping.append(signum)
            if server.process is not None and server.process.poll() is None:
                server.process.send_signal(signal.SIGTERM)

        previous = {s: signal.signal(s, _stop) for s in (signal.SIGINT, signal.SIGTERM)}
        front = None
        try:
            server.start()
            front = _front(args.http_port, server.http_port).start()
            print(f"serving {found.path} as model 'ensemble' on http://127.0.0.1:"
                  f"{args.http_port} and grpc 127.0.0.1:{args.grpc_port}", file=sys.stderr,
                  flush=True)
            while server.process.poll() is None:
                try:
                    server.wait()
                except KeyboardInterrupt:  # pragma: no cover - handled by _stop
                    continue
            code = server.stop()
        finally:
            server.stop()
            if front is not None:
                front.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    return 0 if stopping and code == 0 else (code or 0)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve", help="serve a checkpoint through Triton Inference Server on CPU",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True,
                        help="checkpoint (iter_N or converted), run directory or its checkpoints/")
    parser.add_argument("--tokenizer", default=None,
                        help="tokenizer directory (default: the one the checkpoint carries)")
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--max-batch-size", type=int, default=8,
                        help="largest dynamic batch (Triton's max_batch_size)")
    parser.add_argument("--max-tokens-limit", type=int, default=256,
                        help="largest max_tokens a request may ask for")
    parser.add_argument("--queue-delay-us", type=int, default=2000,
                        help="how long Triton waits to fill a dynamic batch (microseconds)")
    parser.add_argument("--chat", action="store_true",
                        help="wrap text_input as a user turn in the checkpoint family's EXAONE "
                        "chat format (3.x or 4.0), with the generation prompt")
    parser.add_argument("--log-file", type=Path, default=None,
                        help="write the server's log here (default: this terminal)")
    parser.add_argument("--ready-timeout", type=float, default=300.0,
                        help="seconds to wait for the server to load the model")
    parser.set_defaults(func=run)
