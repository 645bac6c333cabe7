"""Process groups: torch.distributed (nccl on GPU, gloo on CPU) plus Megatron's parallel state.

Launch with ``torchrun`` for many processes or nodes; a plain ``python`` launch becomes a
world of one. Nothing here replaces torch.distributed: we only choose the backend and pass
the parallel layout to ``megatron.core.parallel_state``.
"""

from __future__ import annotations

import os
import random
import socket
from datetime import timedelta

import numpy as np
import torch

from nemo_exaone.config.parallel import ParallelConfig
from nemo_exaone.runtime.cpu_compat import enable_cpu_compat
from nemo_exaone.runtime.versions import check_megatron_core_version


def free_port() -> int:
    """A TCP port free on loopback right now (for single-node, single-process rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def default_backend() -> str:
    return "nccl" if torch.cuda.is_available() else "gloo"


_SINGLE_PROCESS_MARK = "NEMO_EXAONE_SINGLE_PROCESS"


def _inherited_single_process_env() -> bool:
    """True when RANK/MASTER_PORT were set by ``init_distributed`` in a parent process."""
    mark = os.environ.get(_SINGLE_PROCESS_MARK, "")
    pid, _, port = mark.partition(":")
    return (bool(mark) and pid != str(os.getpid()) and port == os.environ.get("MASTER_PORT")
            and os.environ.get("WORLD_SIZE") == "1")


def init_distributed(
    parallel: ParallelConfig | None = None,
    seed: int = 1234,
    timeout_minutes: int = 30,
) -> None:
    """Initialise torch.distributed and Megatron's model-parallel groups, and seed all RNGs.

    Reads the torchrun environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT);
    without it, starts a single-process group on loopback.
    """
    check_megatron_core_version()
    enable_cpu_compat()
    parallel = parallel or ParallelConfig()
    if not torch.distributed.is_initialized():
        if "RANK" not in os.environ or _inherited_single_process_env():
            # Not launched by torchrun/SLURM: a world of one on loopback. The variables are
            # marked as ours, so a child process that inherits them (a test launching the CLI,
            # a tool spawning a run) starts its own world on a fresh port instead of taking
            # them for a launcher's and colliding with this process's store.
            inherited = _inherited_single_process_env()
            os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
            os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
            if inherited or "MASTER_PORT" not in os.environ:
                os.environ["MASTER_PORT"] = str(free_port())
            os.environ[_SINGLE_PROCESS_MARK] = f"{os.getpid()}:{os.environ['MASTER_PORT']}"
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        torch.distributed.init_process_group(
            backend=default_backend(), timeout=timedelta(minutes=timeout_minutes))
    from megatron.core import parallel_state

    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    parallel_state.initialize_model_parallel(
        tensor_model_parallel_size=parallel.tensor_model_parallel_size,
        pipeline_model_parallel_size=parallel.pipeline_model_parallel_size,
        virtual_pipeline_model_parallel_size=parallel.virtual_pipeline_model_parallel_size,
        context_parallel_size=parallel.context_parallel_size,
        distributed_timeout_minutes=timeout_minutes,
    )
    set_seed(seed)


def set_seed(seed: int) -> None:
    """Seed Python, NumPy, torch and Megatron's tensor-parallel RNG tracker.

    Megatron gives each tensor-parallel rank its own stream (seed + 2718 + tp_rank) so that
    dropout differs across ranks where it must, and is identical where it must.
    """
    from megatron.core import tensor_parallel

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    tensor_parallel.model_parallel_cuda_manual_seed(seed)


def destroy_distributed() -> None:
    """Tear down Megatron's groups and the default process group (safe to call twice)."""
    from megatron.core import parallel_state

    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
