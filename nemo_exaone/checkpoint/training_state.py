"""Training checkpoints: the model (through :mod:`.mcore_checkpoint`) plus the training state.

Layout under the checkpoint root (``<run.dir>/checkpoints``)::

    iter_0000050/            model + optimizer tensors (sharded, layout independent),
                             common.pt (train state, scheduler), rng (per TP/PP rank),
                             nemo_exaone.json (architecture: what every checkpoint records),
                             nemo_exaone_training.json (step, layout, contents)
    latest                   text file naming the newest complete checkpoint

Writes are atomic: every rank writes into a temporary directory whose name rank 0 picks
(unique to its process); when all ranks finished, rank 0 verifies it (every file the DCP
metadata lists, with its size), renames it to ``iter_0000050`` and only then replaces
``latest``. A run killed at any moment leaves either the previous complete checkpoint or the
new one as ``latest``, never a partial one; its temporaries are removed by the next run.

Optimizer state is saved in model space (``fully_reshardable`` for the distributed
optimizer), so it reshards across TP/PP/DP like the weights.
"""

from __future__ import annotations

import dataclasses
import json
import random
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from nemo_exaone.checkpoint.errors import CheckpointError
from nemo_exaone.checkpoint.exaone_hf import copy_identity
from nemo_exaone.checkpoint.identity import IdentitySource, write_identity
from nemo_exaone.checkpoint.locate import LATEST_FILE, checkpoint_name, clean_temporaries
from nemo_exaone.checkpoint.mcore_checkpoint import (
    apply_model_state,
    barrier,
    model_load_request,
    model_sharded_state_dict,
    rank,
    shared_temporary,
    verify_before_publish,
    write_model_metadata,
)
from nemo_exaone.checkpoint.metadata import (
    TRAINING_FORMAT,
    TRAINING_METADATA_NAME,
    check_arch_compatible,
    read_checkpoint_arch,
)
from nemo_exaone.config.presets import ExaoneArch

# Gathered to DP rank 0 at save, sliced per rank at load: reshards across TP, PP and DP.
OPTIMIZER_METADATA = {"distrib_optim_sharding_type": "fully_reshardable"}


@dataclass
class TrainState:
    """Where the loop stands; saved in every checkpoint."""

    step: int = 0
    consumed_samples: int = 0
    trained_tokens: int = 0
    skipped_steps: int = 0
    stage: str = "pretrain"


@dataclass(frozen=True)
class Layout:
    tp: int
    pp: int
    vpp: int | None
    dp: int
    world: int

    @classmethod
    def current(cls) -> Layout:
        from megatron.core import parallel_state as ps

        return cls(tp=ps.get_tensor_model_parallel_world_size(),
                   pp=ps.get_pipeline_model_parallel_world_size(),
                   vpp=ps.get_virtual_pipeline_model_parallel_world_size(),
                   dp=ps.get_data_parallel_world_size(),
                   world=torch.distributed.get_world_size())


# ------------------------------------------------------------------ RNG and optimizer
def _rng_state() -> dict:
    from megatron.core import tensor_parallel

    state = {"random": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state(),
             "tracker": tensor_parallel.get_cuda_rng_tracker().get_states()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict) -> None:
    from megatron.core import tensor_parallel

    random.setstate(state["random"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    tensor_parallel.get_cuda_rng_tracker().set_states(state["tracker"])


def _rng_sharded_object(layout: Layout):
    from megatron.core import parallel_state as ps
    from megatron.core.dist_checkpointing.mapping import ShardedObject

    return ShardedObject("rng_state", [_rng_state()], (layout.pp, layout.tp),
                         (ps.get_pipeline_model_parallel_rank(),
                          ps.get_tensor_model_parallel_rank()),
                         replica_id=ps.get_data_parallel_rank(with_context_parallel=True))


def uses_distributed_optimizer(optimizer) -> bool:
    from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer

    return any(isinstance(o, DistributedOptimizer)
               for o in getattr(optimizer, "chained_optimizers", [optimizer]))


def _materialize_optimizer_state(optimizer) -> None:
    """Give an unstepped distributed optimizer its (zero) Adam state.

    Without Apex/Transformer Engine, Megatron's ``DistributedOptimizer.state_dict()`` reads
    the per-parameter ``step`` of torch's Adam and asserts there is one, which fails before
    the first update, i.e. exactly when a checkpoint is about to be loaded. Zero moments and
    step 0 are what Adam creates lazily anyway, and the load overwrites them.
    """
    from megatron.core.optimizer import distrib_optimizer

    from nemo_exaone.runtime.megatron_compat import fix_distributed_optimizer_step_loading

    if getattr(distrib_optimizer, "HAVE_APEX_OR_TE", True):
        return
    fix_distributed_optimizer_step_loading()
    for opt in getattr(optimizer, "chained_optimizers", [optimizer]):
        inner = getattr(opt, "optimizer", None)
        if not isinstance(opt, distrib_optimizer.DistributedOptimizer) or inner is None \
                or len(inner.state) > 0:
            continue
        for group in inner.param_groups:
            for param in group["params"]:
                inner.state[param] = {"step": torch.tensor(0.0),
                                      "exp_avg": torch.zeros_like(param),
                                      "exp_avg_sq": torch.zeros_like(param)}


def optimizer_load_request(optimizer, model_request: dict) -> dict:
    """The optimizer's sharded state dict for a load, keyed like ``model_request``."""
    _materialize_optimizer_state(optimizer)
    return optimizer.sharded_state_dict(dict(model_request), is_loading=True,
                                        metadata=OPTIMIZER_METADATA)


def apply_optimizer_state(optimizer, state: dict) -> None:
    from nemo_exaone.runtime.megatron_compat import unshare_adam_steps

    optimizer.load_state_dict(state)
    unshare_adam_steps(optimizer)


def _save_request(chunks, optimizer, scheduler, state: TrainState, layout: Layout) -> dict:
    _materialize_optimizer_state(optimizer)
    sd = model_sharded_state_dict(chunks)
    sd["optimizer"] = optimizer.sharded_state_dict(dict(sd), is_loading=False,
                                                   metadata=OPTIMIZER_METADATA)
    sd["train_state"] = asdict(state)
    sd["scheduler"] = scheduler.state_dict()
    sd["layout"] = {**asdict(layout), "distributed_optimizer": uses_distributed_optimizer(optimizer)}
    sd["rng_state"] = _rng_sharded_object(layout)
    return sd


# ------------------------------------------------------------------ save
class CheckpointSaver:
    """Saves checkpoints under ``root`` atomically; asynchronously if asked.

    Asynchronous: tensors are copied to host memory and written by a background process
    while training goes on; the checkpoint is verified and renamed into place (and ``latest``
    updated) when all ranks finished writing, at a later :meth:`finalize`.
    """

    def __init__(self, root: str | Path, arch: ExaoneArch, async_save: bool = False,
                 keep_last: int | None = None) -> None:
        self.root = Path(root)
        self.arch = arch
        self._identity: IdentitySource | None = None  # HF files every checkpoint carries
        self._identity_copy: tempfile.TemporaryDirectory | None = None
        self.keep_last = keep_last
        self.async_save = bool(async_save)
        self._queue = None
        self._save_kwargs: dict = {}
        if self.async_save:
            queue_cls, self._save_kwargs = _async_machinery()
            self._queue = queue_cls()
        if rank() == 0:
            clean_temporaries(self.root)  # left by killed runs (the caller holds the run lock)

    @property
    def identity(self) -> IdentitySource | None:
        return self._identity

    @identity.setter
    def identity(self, source: IdentitySource | None) -> None:
        """Snapshot the files now (rank 0, which publishes): they usually live in the
        checkpoint this run resumed from, which ``keep_last`` may delete before a later save."""
        self._identity = source
        if source is None or rank() != 0:
            return
        self._identity_copy = tempfile.TemporaryDirectory(prefix="nemo_exaone_identity_")
        copy = Path(self._identity_copy.name)
        copy_identity(source.directory, copy, list(source.files))
        self._identity = dataclasses.replace(source, directory=copy)

    def save(self, step: int, chunks, optimizer, scheduler, state: TrainState) -> Path:
        """Write checkpoint ``iter_<step>``; returns its final path (complete on return,
        unless asynchronous: then complete after :meth:`finalize`)."""
        from megatron.core import dist_checkpointing

        from nemo_exaone.runtime.outputs import publish_directory, write_text_atomic
        from nemo_exaone.runtime.versions import megatron_core_version

        self.finalize(blocking=True)  # one checkpoint in flight at a time
        layout = Layout.current()
        final = self.root / checkpoint_name(step)
        tmp = shared_temporary(final)
        sd = _save_request(chunks, optimizer, scheduler, state, layout)
        meta = {"format": TRAINING_FORMAT, "arch": self.arch.to_hf_config(),
                "arch_name": self.arch.name, "train_state": asdict(state),
                "layout": asdict(layout), "megatron_core": megatron_core_version(),
                "saved_at": time.time(),
                "contents": ["model", "optimizer", "scheduler", "rng_state", "train_state"]}
        request = dist_checkpointing.save(sd, str(tmp), async_sharded_save=self.async_save,
                                          **self._save_kwargs)

        def publish() -> None:
            if rank() == 0:
                (tmp / TRAINING_METADATA_NAME).write_text(json.dumps(meta, indent=2) + "\n")
                write_model_metadata(tmp, self.arch, chunks, writer="nemo_exaone.training")
                write_identity(tmp, self.identity)  # carried from import to export
                verify_before_publish(tmp)
                publish_directory(tmp, final)
                write_text_atomic(self.root / LATEST_FILE, final.name + "\n")
                self._prune()
            barrier()

        if request is None:
            publish()
        else:
            request.finalize_fns.append(publish)
            self._queue.schedule_async_request(request)
        return final

    def finalize(self, blocking: bool = False) -> None:
        """Publish finished asynchronous saves (all ranks must call it together)."""
        if self._queue is not None:
            self._queue.maybe_finalize_async_calls(blocking=blocking)

    def _prune(self) -> None:
        if not self.keep_last:
            return
        done = sorted(p for p in self.root.glob("iter_*") if p.is_dir())
        for old in done[: -self.keep_last]:
            shutil.rmtree(old, ignore_errors=True)


def _async_machinery() -> tuple[type, dict]:
    """The AsyncCallsQueue class and ``save`` keyword arguments for asynchronous saves.

    megatron-core 0.16 has one implementation; 0.19 defaults to NVIDIA Resiliency Extension
    (``nvidia-resiliency-ext``) and keeps its own ("mcore", deprecated) as the fallback.
    """
    import inspect

    from megatron.core import dist_checkpointing

    if "async_strategy" not in inspect.signature(dist_checkpointing.save).parameters:
        from megatron.core.dist_checkpointing.strategies.async_utils import AsyncCallsQueue

        return AsyncCallsQueue, {}
    from megatron.core.dist_checkpointing.strategies.nvrx import has_nvrx_async_support
    from megatron.core.dist_checkpointing.strategies.torch import get_async_strategy

    strategy = "nvrx" if has_nvrx_async_support() else "mcore"
    _, modules = get_async_strategy(strategy)
    return modules["AsyncCallsQueue"], {"async_strategy": strategy}


# ------------------------------------------------------------------ load
def load_training_state(path: Path, chunks, optimizer, scheduler, arch: ExaoneArch
                        ) -> TrainState:
    """Resume: model, optimizer, scheduler, RNG (same layout only) and the train state."""
    from megatron.core import dist_checkpointing

    check_arch_compatible(read_checkpoint_arch(path), arch, path, purpose="resume")
    try:
        common = dist_checkpointing.load_common_state_dict(str(path))
    except Exception as exc:  # a truncated or garbled archive raises several kinds
        raise CheckpointError(f"{path / 'common.pt'} is unreadable (truncated or corrupt: "
                              f"{type(exc).__name__}: {exc})") from exc
    layout = Layout.current()
    saved_layout = common.get("layout", {})
    same_layout = {k: saved_layout.get(k) for k in ("tp", "pp")} == {"tp": layout.tp,
                                                                     "pp": layout.pp}
    saved_distopt = saved_layout.get("distributed_optimizer", False)
    if saved_distopt != uses_distributed_optimizer(optimizer):
        raise CheckpointError(
            f"checkpoint {path} holds {'distributed' if saved_distopt else 'non-distributed'} "
            "optimizer state; resume with parallel.use_distributed_optimizer="
            f"{str(saved_distopt).lower()} (the two formats differ), or start a new stage "
            "from it with init.checkpoint and init.load=weights")
    state = TrainState(**common["train_state"])
    request = model_load_request(chunks, path)
    request["optimizer"] = optimizer_load_request(optimizer, request)
    if same_layout:
        request["rng_state"] = _rng_sharded_object(layout)
    loaded = dist_checkpointing.load(request, str(path))
    apply_model_state(chunks, loaded, path)
    apply_optimizer_state(optimizer, loaded["optimizer"])
    scheduler.load_state_dict(common["scheduler"])
    if same_layout:
        _set_rng_state(loaded["rng_state"][0])
    return state
