"""Start N local processes with a torch.distributed rendezvous on loopback.

Used by tests, benchmarks and the CPU demo to run real multi-process (gloo) groups on one
machine. Cluster launches use ``torchrun`` / SLURM instead; the worker code is the same.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch.multiprocessing as mp

from nemo_exaone.runtime.distributed import free_port


def _worker(rank: int, world_size: int, port: int, fn: Callable, args: tuple, out_dir: str):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    # Two processes on two cores: one intra-op thread each avoids oversubscription.
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
    path = Path(out_dir) / f"rank{rank}.pkl"
    try:
        result = fn(*args)
        path.write_bytes(pickle.dumps(("ok", result)))
    except BaseException as exc:  # report to the parent, then fail this process
        path.write_bytes(pickle.dumps(("error", f"{type(exc).__name__}: {exc}\n"
                                                 f"{traceback.format_exc()}")))
        raise


def spawn_local(fn: Callable, world_size: int, *args: Any) -> list[Any]:
    """Run ``fn(*args)`` in ``world_size`` processes; return each rank's result, rank order.

    ``fn`` must be importable (a module-level function). Errors in any rank are re-raised
    here with that rank's traceback.
    """
    with tempfile.TemporaryDirectory(prefix="nemo_exaone_spawn_") as out_dir:
        port = free_port()
        try:
            mp.start_processes(_worker, args=(world_size, port, fn, args, out_dir),
                               nprocs=world_size, join=True, start_method="spawn")
        except mp.ProcessRaisedException:
            pass  # the per-rank error file below carries the real message
        except mp.ProcessExitedException as exc:
            raise RuntimeError(f"a worker process died: {exc}") from exc
        results = []
        for rank in range(world_size):
            path = Path(out_dir) / f"rank{rank}.pkl"
            if not path.exists():
                raise RuntimeError(f"rank {rank} produced no result")
            status, value = pickle.loads(path.read_bytes())
            if status != "ok":
                raise RuntimeError(f"rank {rank} failed: {value}")
            results.append(value)
        return results
