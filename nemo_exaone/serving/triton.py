"""Run the Triton Inference Server bundled in the ``nvidia-pytriton`` wheel on a model
repository, on 127.0.0.1, without a GPU.

Facts this relies on (measured with nvidia-pytriton 0.7.0, tritonserver 2.51; see
``shared/notes/PLATFORM.md``): the wheel ships ``pytriton/tritonserver/bin/tritonserver``, the
Python backend (``backends/python/``) and a stub per Python version
(``python_backend_stubs/3.X/``), and its shared libraries in ``nvidia_pytriton.libs/``. The
server needs those libraries and this Python's ``LIBDIR`` on ``LD_LIBRARY_PATH`` and this
interpreter's ``bin`` first on ``PATH`` (the stub finds its site-packages through it); a
``--backend-directory`` laid out as ``python/{libtriton_python.so,
triton_python_backend_utils.py,triton_python_backend_stub}``; and a unique
``shm-region-prefix-name`` so that servers do not share shared-memory regions. The stub
writes ``__pycache__`` into the repository, so the server runs on a copy in a temporary
workspace; the workspace (and the shared-memory regions) of a server whose launcher died are
removed by the next launch.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from nemo_exaone.config.errors import ConfigError, InputError
from nemo_exaone.runtime.outputs import pid_alive

WORKSPACE_STEM = "nemo-exaone-serve"
SHM_PREFIX = "nemo_exaone_serve_"


@dataclass(frozen=True)
class TritonInstall:
    """Where the bundled server's pieces are."""

    binary: Path
    backend: Path  # libtriton_python.so + triton_python_backend_utils.py
    stub: Path
    libs: Path


def find_triton() -> TritonInstall:
    """Locate the server in the installed ``nvidia-pytriton`` wheel; explain how to get it."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the Triton server comes from the nvidia-pytriton wheel, which is not "
                          f"installed for {sys.executable}: run scripts/setup_serve.sh and use "
                          "the interpreter it prints (nvidia-pytriton pins numpy<2)")
    root = Path(next(iter(spec.submodule_search_locations))) / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    install = TritonInstall(binary=root / "bin" / "tritonserver",
                            backend=root / "backends" / "python",
                            stub=root / "python_backend_stubs" / version /
                            "triton_python_backend_stub",
                            libs=root.parent.parent / "nvidia_pytriton.libs")
    for path in (install.binary, install.backend / "libtriton_python.so", install.stub,
                 install.libs):
        if not path.exists():
            raise ConfigError(f"nvidia-pytriton install is incomplete: {path} is missing "
                              f"(Python {version} needs its backend stub)")
    return install


def remove_stale(tmp_root: Path | None = None, shm_root: Path = Path("/dev/shm")) -> list[Path]:
    """Delete workspaces and shared-memory regions of launchers that no longer run."""
    from nemo_exaone.runtime.outputs import remove_stale_temporaries

    root = Path(tmp_root or tempfile.gettempdir())
    removed = remove_stale_temporaries(root / WORKSPACE_STEM)
    if shm_root.is_dir():
        for region in shm_root.glob(f"{SHM_PREFIX}*"):
            pid = region.name[len(SHM_PREFIX):].split("_", 1)[0]
            if pid.isdigit() and not pid_alive(int(pid)):
                region.unlink(missing_ok=True)
                removed.append(region)
    return removed


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """The server gets SIGTERM if its launcher dies (Linux prctl PR_SET_PDEATHSIG)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


class TritonServer:
    """A running ``tritonserver`` on a private copy of a model repository.

    ``start()`` copies ``repository`` into a fresh workspace (named after this process, so a
    later launch can tell it is stale), starts the server on 127.0.0.1 and waits until
    ``/v2/health/ready`` answers; ``stop()`` sends SIGTERM (the server drains requests),
    waits, and removes the workspace and the shared-memory regions.
    """

    def __init__(self, repository: Path, *, http_port: int = 8000, grpc_port: int = 8001,
                 log_file: Path | None = None, ready_timeout: float = 300.0,
                 extra_args: tuple[str, ...] = ()) -> None:
        self.repository = Path(repository)
        self.http_port = http_port
        self.grpc_port = grpc_port
        self.log_file = log_file
        self.ready_timeout = ready_timeout
        self.extra_args = extra_args
        self.workspace: Path | None = None
        self.process: subprocess.Popen | None = None
        self._shm_prefix = f"{SHM_PREFIX}{os.getpid()}_{id(self) & 0xFFFFFF:x}_"

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    def _command(self, install: TritonInstall) -> list[str]:
        assert self.workspace is not None
        return [str(install.binary), f"--model-repository={self.workspace / 'repo'}",
                f"--backend-directory={self.workspace / 'backends'}",
                "--http-address=127.0.0.1", f"--http-port={self.http_port}",
                "--grpc-address=127.0.0.1", f"--grpc-port={self.grpc_port}",
                "--allow-metrics=false", "--exit-timeout-secs=30",
                f"--backend-config=python,shm-region-prefix-name={self._shm_prefix}",
                *self.extra_args]

    def _environment(self, install: TritonInstall) -> dict[str, str]:
        env = dict(os.environ)
        libdir = sysconfig.get_config_var("LIBDIR") or ""
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            p for p in (str(install.libs), libdir, env.get("LD_LIBRARY_PATH", "")) if p)
        env["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), env.get("PATH", "")))
        # The stub's embedded Python takes the C locale's ASCII otherwise, and torch reads its
        # templates with the locale's encoding (UnicodeDecodeError at model load).
        env["PYTHONUTF8"] = "1"
        env.setdefault("LC_ALL", "C.UTF-8")
        return env

    def start(self) -> TritonServer:
        if not (self.repository / "ensemble" / "config.pbtxt").is_file() and not any(
                self.repository.glob("*/config.pbtxt")):
            raise InputError(f"{self.repository} holds no model (no */config.pbtxt)")
        install = find_triton()
        remove_stale()
        from nemo_exaone.runtime.outputs import temporary_name

        self.workspace = temporary_name(Path(tempfile.gettempdir()) / WORKSPACE_STEM)
        self.workspace.mkdir(mode=0o700)
        try:
            shutil.copytree(self.repository, self.workspace / "repo")
            backend = self.workspace / "backends" / "python"
            backend.mkdir(parents=True)
            for source in (install.backend / "libtriton_python.so",
                           install.backend / "triton_python_backend_utils.py", install.stub):
                shutil.copy2(source, backend / source.name)
            log = open(self.log_file, "ab") if self.log_file else None  # noqa: SIM115
            try:
                self.process = subprocess.Popen(
                    self._command(install), env=self._environment(install), stdin=subprocess.DEVNULL,
                    stdout=log, stderr=subprocess.STDOUT if log else None,
                    preexec_fn=_die_with_parent)
            finally:
                if log:
                    log.close()
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        url = f"http://{self.url}/v2/health/ready"
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                where = f" (its log: {self.log_file})" if self.log_file else ""
                raise RuntimeError(f"tritonserver exited with code {self.process.returncode} "
                                   f"before it was ready{where}")
            with contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError):
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            time.sleep(0.25)
        raise TimeoutError(f"tritonserver not ready on {url} after {self.ready_timeout:.0f} s")

    def wait(self) -> int:
        """Block until the server exits; its exit code."""
        assert self.process is not None
        return self.process.wait()

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM, wait (SIGKILL after ``timeout``), clean up; the server's exit code."""
        code = None
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
            code = self.process.returncode
        if self.workspace is not None:
            shutil.rmtree(self.workspace, ignore_errors=True)
            self.workspace = None
        for region in Path("/dev/shm").glob(f"{self._shm_prefix}*"):
            region.unlink(missing_ok=True)
        return code

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
