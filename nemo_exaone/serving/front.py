"""The HTTP front of ``nemo-exaone serve``: a loopback reverse proxy in the launcher process
that checks the integers of JSON generate requests before Triton sees them.

Why: Triton's generate extension (``POST /v2/models/<m>/generate`` and ``generate_stream``)
converts a JSON number to the input's declared type by casting, so ``"max_tokens":
4294967297`` reaches the model as INT32 1 and is answered (measured with tritonserver 2.51 of
nvidia-pytriton 0.7.0: 2**31 arrives as -2**31, 2**32 + k as k, and a float or a number past
64 bits gives a 500 "Unable to parse 'data'" that names no field). The model cannot tell a
wrapped value from a real one, and ``max_tokens`` stays INT32 so TensorRT-LLM's clients work
unchanged, so the range is checked here, on the JSON text: a value outside its type's range
(``max_tokens`` outside [1, 2**31-1]) is refused with 400 ``{"error": ...}`` naming the field.
Every other request (KServe JSON or binary tensors, health, metadata) is relayed byte for byte;
gRPC does not pass through here (its tensors are typed, nothing wraps).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from nemo_exaone.serving.backend import INPUTS

_TYPE_RANGES = {"TYPE_INT32": (-(2**31), 2**31 - 1), "TYPE_INT64": (-(2**63), 2**63 - 1),
                "TYPE_UINT32": (0, 2**32 - 1), "TYPE_UINT64": (0, 2**64 - 1)}
_AT_LEAST = {"max_tokens": 1}
#: JSON fields of the served model's integer inputs and the range each must fit: the type
#: :data:`nemo_exaone.serving.backend.INPUTS` declares (``max_tokens`` also >= 1).
INT_RANGES: dict[str, tuple[int, int]] = {
    name: (max(_TYPE_RANGES[kind][0], _AT_LEAST.get(name, _TYPE_RANGES[kind][0])),
           _TYPE_RANGES[kind][1])
    for name, (kind, _) in INPUTS.items() if kind in _TYPE_RANGES}
GENERATE_PATH = re.compile(r"^/v2/models/[^/?]+(/versions/[^/?]+)?/generate(_stream)?/?(\?.*)?$")
# Hop-by-hop headers (RFC 9110 7.6.1) and the ones the relay sets itself.
_NOT_RELAYED = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te",
                "trailer", "upgrade", "expect", "content-length", "host"}


def _values(value: Any) -> list:
    """A JSON value flattened (Triton accepts a number or a nested list of numbers)."""
    if isinstance(value, list):
        return [v for item in value for v in _values(item)]
    return [value]


def check_generate_body(body: bytes) -> str | None:
    """Why a generate request's integer fields cannot be passed on (None: they can, or the
    body is not a JSON object, which Triton refuses itself)."""
    try:
        request = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(request, dict):
        return None
    for field, (low, high) in INT_RANGES.items():
        if field not in request:
            continue
        for value in _values(request[field]):
            if isinstance(value, bool) or not isinstance(value, int):
                return f"{field} must be an integer, got {json.dumps(value)}"
            if not low <= value <= high:
                kind = INPUTS[field][0].removeprefix("TYPE_")
                article = "an" if kind.startswith("INT") else "a"  # "a UINT64": "you-int"
                return (f"{field}={json.dumps(value)} is outside [{low}, {high}] "
                        f"({article} {kind} input)")
    return None


class _Relay(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out as separate writes: without TCP_NODELAY, Nagle's algorithm
    # and the client's delayed ACK hold each response back ~40 ms (measured: 44 ms vs 0.1).
    disable_nagle_algorithm = True
    server: FrontServer

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base's name
        pass  # Triton logs the requests it serves

    def _body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        try:
            return self.rfile.read(int(length))
        except ValueError:
            self._reply(400, f"Content-Length {length!r} is not a number")
            return None

    def _reply(self, status: int, message: str) -> None:
        data = json.dumps({"error": message}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _backend(self, fresh: bool = False) -> http.client.HTTPConnection:
        local = self.server.local
        if fresh or getattr(local, "connection", None) is None:
            with contextlib.suppress(Exception):
                if getattr(local, "connection", None) is not None:
                    local.connection.close()
            local.connection = http.client.HTTPConnection(
                "127.0.0.1", self.server.backend_port, timeout=self.server.timeout_s)
        return local.connection

    def _relay(self) -> None:
        body = self._body()
        if body is None:
            return
        if self.command == "POST" and GENERATE_PATH.match(self.path):
            problem = check_generate_body(body)
            if problem is not None:
                self._reply(400, problem)
                return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _NOT_RELAYED}
        headers["Host"] = f"127.0.0.1:{self.server.backend_port}"
        if body or self.command in ("POST", "PUT"):
            headers["Content-Length"] = str(len(body))
        for attempt in (0, 1):  # a kept-alive connection Triton closed: reconnect once
            try:
                connection = self._backend(fresh=attempt > 0)
                connection.request(self.command, self.path, body=body or None, headers=headers)
                response = connection.getresponse()
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                if attempt:
                    self._reply(502, "the Triton server closed the connection")
                    return
            except OSError as exc:
                self._reply(502, f"the Triton server is not reachable ({exc})")
                return
        self.send_response_only(response.status, response.reason)
        self.send_header("Server", "nemo-exaone-serve")
        for key, value in response.getheaders():
            if key.lower() not in _NOT_RELAYED:
                self.send_header(key, value)
        if response.length is not None or response.status in (204, 304) or \
                self.command == "HEAD":
            data = response.read()
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        else:  # a stream (generate_stream): relayed as it comes
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            while chunk := response.read1(65536):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        if response.will_close:
            self._backend(fresh=True)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _relay


class FrontServer(ThreadingHTTPServer):
    """``127.0.0.1:port`` in front of Triton's HTTP endpoint on ``backend_port``; one thread
    per client connection, each with its own kept-alive connection to Triton."""

    daemon_threads = True

    def __init__(self, port: int, backend_port: int, timeout_s: float = 600.0) -> None:
        self.backend_port = backend_port
        self.timeout_s = timeout_s
        self.local = threading.local()
        super().__init__(("127.0.0.1", port), _Relay)
        self._thread: threading.Thread | None = None

    def start(self) -> FrontServer:
        self._thread = threading.Thread(target=self.serve_forever, name="serve-front",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self.shutdown()
            self._thread.join()
            self._thread = None
        self.server_close()
