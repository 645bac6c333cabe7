"""Distributed checkpoints of the training state (megatron.core.dist_checkpointing).

Layout under the checkpoint root (``<run.dir>/checkpoints``)::

    iter_0000050/            model + optimizer tensors (sharded, layout independent),
                             common.pt (train state, scheduler), rng (per TP/PP rank),
                             nemo_exaone_training.json (architecture, layout, step),
                             nemo_exaone.json (the checkpoint module's metadata, so its
                             tools, e.g. export to HF, accept training checkpoints)
    latest                   text file naming the newest complete checkpoint

Writes are atomic: every rank writes into ``.iter_0000050.tmp``; after all ranks finished,
rank 0 renames it to ``iter_0000050`` and only then replaces ``latest`` (itself written to
a temporary file and renamed). A run killed at any moment leaves either the previous
complete checkpoint or the new one as ``latest``, never a partial one.

Model tensors carry the keys of ``model.sharded_state_dict()``, the same keys the HF
converter writes, so a converted HF checkpoint loads weights-only into any stage, and
checkpoints reshard freely across TP/PP layouts. Optimizer state is saved in model space
(``fully_reshardable`` for the distributed optimizer), so it reshards too.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nemo_exaone.config.presets import ExaoneArch

LATEST_FILE = "latest"
EXTRA_STATE = "_extra_state"
METADATA_FILE = "nemo_exaone_training.json"
FORMAT = "nemo_exaone.training.checkpoint/1"
# Gathered to DP rank 0 at save, sliced per rank at load: reshards across TP, PP and DP.
OPTIMIZER_METADATA = {"distrib_optim_sharding_type": "fully_reshardable"}
# Fields that fix tensor shapes: they must match for any load.
SHAPE_FIELDS = ("num_layers", "hidden_size", "num_attention_heads", "num_key_value_heads",
                "intermediate_size", "vocab_size", "head_dim", "tie_word_embeddings")
# Fields a new stage may change (context extension); a resume must keep them.
STAGE_MUTABLE_FIELDS = ("max_position_embeddings", "rope_theta", "rope_scaling",
                        "layer_norm_epsilon")


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


def checkpoint_name(step: int) -> str:
    return f"iter_{step:07d}"


def _rank() -> int:
    return torch.distributed.get_rank() if torch.distributed.is_initialized() else 0


def _barrier() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.barrier()


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


# ------------------------------------------------------------------ locating checkpoints
def latest_checkpoint(root: str | Path) -> Path | None:
    """The checkpoint ``root/latest`` names, or None when there is none yet."""
    pointer = Path(root) / LATEST_FILE
    if not pointer.is_file():
        return None
    path = Path(root) / pointer.read_text(encoding="utf-8").strip()
    if not path.is_dir():
        raise FileNotFoundError(f"{pointer} names {path.name}, which does not exist")
    return path


def _is_checkpoint_dir(path: Path) -> bool:
    return (path / "metadata.json").is_file() or (path / "common.pt").is_file()


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory from a run dir, a checkpoint root (via ``latest``) or itself."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint path {path} does not exist")
    if _is_checkpoint_dir(path):
        return path
    for root in (path, path / "checkpoints"):
        found = latest_checkpoint(root) if root.is_dir() else None
        if found is not None:
            return found
    raise FileNotFoundError(f"{path} is not a checkpoint, a checkpoint root with a "
                            f"'{LATEST_FILE}' file, or a run directory holding one")


def read_checkpoint_arch(path: Path) -> dict | None:
    """The HF-style architecture config stored with a checkpoint (ours or the converter's)."""
    ours = path / METADATA_FILE
    if ours.is_file():
        return json.loads(ours.read_text(encoding="utf-8")).get("arch")
    for candidate in sorted(path.glob("*.json")):
        if candidate.name == "metadata.json":
            continue  # dist_checkpointing's own backend metadata
        try:
            data = json.loads(candidate.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        for key in ("hf_config", "arch", "config"):
            if isinstance(data.get(key), dict) and "hidden_size" in data[key]:
                return data[key]
    return None


def check_arch_compatible(saved: dict | None, arch: ExaoneArch, path: Path, *, resume: bool
                          ) -> list[str]:
    """Refuse a checkpoint of another architecture; returns allowed (stage) differences."""
    if saved is None:
        raise ValueError(f"checkpoint {path} carries no architecture metadata "
                         f"({METADATA_FILE}); cannot check that it fits this model")
    theirs = ExaoneArch.from_hf_config({"model_type": "exaone", **saved})
    fields = SHAPE_FIELDS + (STAGE_MUTABLE_FIELDS if resume else ())
    bad = [f"{f}: checkpoint {getattr(theirs, f)!r} vs this run {getattr(arch, f)!r}"
           for f in fields if getattr(theirs, f) != getattr(arch, f)]
    if bad:
        what = "resume this run" if resume else "initialise this stage"
        raise ValueError(f"checkpoint {path} was written for a different architecture and "
                         f"cannot {what}: " + "; ".join(bad)
                         + ". Select the matching model.preset / model.arch overrides"
                         + ("" if resume else " (only RoPE and context length may change "
                            "between stages)"))
    return [f"{f}: {getattr(theirs, f)!r} -> {getattr(arch, f)!r}" for f in STAGE_MUTABLE_FIELDS
            if getattr(theirs, f) != getattr(arch, f)]


# ------------------------------------------------------------------ state dicts
def unwrap(chunk: torch.nn.Module) -> torch.nn.Module:
    while hasattr(chunk, "module"):
        chunk = chunk.module
    return chunk


def model_sharded_state_dict(chunks: list) -> dict:
    if len(chunks) == 1:
        return {"model": unwrap(chunks[0]).sharded_state_dict()}
    return {f"model{i}": unwrap(c).sharded_state_dict() for i, c in enumerate(chunks)}


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


def _full_state_dict(chunks, optimizer, scheduler, state: TrainState, layout: Layout,
                     is_loading: bool, with_rng: bool) -> dict:
    _materialize_optimizer_state(optimizer)
    sd = model_sharded_state_dict(chunks)
    model_sd = dict(sd)
    sd["optimizer"] = optimizer.sharded_state_dict(model_sd, is_loading=is_loading,
                                                   metadata=OPTIMIZER_METADATA)
    sd["train_state"] = asdict(state)
    sd["scheduler"] = scheduler.state_dict()
    sd["layout"] = {**asdict(layout), "distributed_optimizer": uses_distributed_optimizer(optimizer)}
    if with_rng:
        sd["rng_state"] = _rng_sharded_object(layout)
    return sd


# ------------------------------------------------------------------ save
class CheckpointSaver:
    """Saves checkpoints under ``root`` atomically; asynchronously if asked.

    Asynchronous: tensors are copied to host memory and written by a background process
    while training goes on; the checkpoint is renamed into place (and ``latest`` updated)
    when all ranks finished writing, at a later :meth:`finalize`.
    """

    def __init__(self, root: str | Path, arch: ExaoneArch, async_save: bool = False,
                 keep_last: int | None = None) -> None:
        self.root = Path(root)
        self.arch = arch
        self.keep_last = keep_last
        self.async_save = bool(async_save)
        self._queue = None
        self._save_kwargs: dict = {}
        if self.async_save:
            queue_cls, self._save_kwargs = _async_machinery()
            self._queue = queue_cls()

    def save(self, step: int, chunks, optimizer, scheduler, state: TrainState) -> Path:
        """Write checkpoint ``iter_<step>``; returns its final path (complete on return,
        unless asynchronous: then complete after :meth:`finalize`)."""
        from megatron.core import dist_checkpointing

        self.finalize(blocking=True)  # one checkpoint in flight at a time
        layout = Layout.current()
        final = self.root / checkpoint_name(step)
        tmp = self.root / f".{final.name}.tmp"
        if _rank() == 0:
            self.root.mkdir(parents=True, exist_ok=True)
            if tmp.exists():
                shutil.rmtree(tmp)  # left by a run killed while saving
            tmp.mkdir()
        _barrier()
        sd = _full_state_dict(chunks, optimizer, scheduler, state, layout, is_loading=False,
                              with_rng=True)
        meta = {"format": FORMAT, "arch": self.arch.to_hf_config(), "arch_name": self.arch.name,
                "train_state": asdict(state), "layout": asdict(layout),
                "megatron_core": _mcore_version(), "saved_at": time.time(),
                "contents": ["model", "optimizer", "scheduler", "rng_state", "train_state"]}
        request = dist_checkpointing.save(sd, str(tmp), async_sharded_save=self.async_save,
                                          **self._save_kwargs)

        def publish() -> None:
            if _rank() == 0:
                (tmp / METADATA_FILE).write_text(json.dumps(meta, indent=2) + "\n")
                _write_checkpoint_module_metadata(tmp, self.arch, chunks)
                if final.exists():
                    old = self.root / f".{final.name}.old-{os.getpid()}"
                    os.replace(final, old)
                    shutil.rmtree(old)
                os.replace(tmp, final)
                _atomic_write_text(self.root / LATEST_FILE, final.name + "\n")
                self._prune()
            _barrier()

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


def _write_checkpoint_module_metadata(path: Path, arch: ExaoneArch, chunks) -> None:
    """``nemo_exaone.json`` as :mod:`nemo_exaone.checkpoint` writes it (when available)."""
    try:
        from nemo_exaone.checkpoint.metadata import CheckpointMetadata, write_metadata
    except ImportError:
        return
    dtype = next(unwrap(chunks[0]).parameters()).dtype
    write_metadata(path, CheckpointMetadata(
        hf_config=arch.to_hf_config(), dtype=str(dtype).replace("torch.", ""),
        writer="nemo_exaone.training", megatron_core=_mcore_version()))


def _mcore_version() -> str:
    from nemo_exaone.runtime.versions import megatron_core_version

    return megatron_core_version()


# ------------------------------------------------------------------ load
def load_training_state(path: Path, chunks, optimizer, scheduler, arch: ExaoneArch
                        ) -> TrainState:
    """Resume: model, optimizer, scheduler, RNG (same layout only) and the train state."""
    from megatron.core import dist_checkpointing

    check_arch_compatible(read_checkpoint_arch(path), arch, path, resume=True)
    common = dist_checkpointing.load_common_state_dict(str(path))
    layout = Layout.current()
    saved_layout = common.get("layout", {})
    same_layout = {k: saved_layout.get(k) for k in ("tp", "pp")} == {"tp": layout.tp,
                                                                     "pp": layout.pp}
    saved_distopt = saved_layout.get("distributed_optimizer", False)
    if saved_distopt != uses_distributed_optimizer(optimizer):
        raise ValueError(
            f"checkpoint {path} holds {'distributed' if saved_distopt else 'non-distributed'} "
            "optimizer state; resume with parallel.use_distributed_optimizer="
            f"{str(saved_distopt).lower()} (the two formats differ), or start a new stage "
            "from it with init.checkpoint and init.load=weights")
    state = TrainState(**common["train_state"])
    sd = _full_state_dict(chunks, optimizer, scheduler, state, layout, is_loading=True,
                          with_rng=same_layout)
    for key in ("train_state", "scheduler", "layout"):
        sd.pop(key)
    stored = _stored_keys(path)
    sd = {k: _without_absent_extra_state(v, stored) if k.startswith("model") else v
          for k, v in sd.items()}
    loaded = dist_checkpointing.load(sd, str(path))
    _load_model(chunks, loaded)
    _load_optimizer(optimizer, loaded["optimizer"])
    scheduler.load_state_dict(common["scheduler"])
    if same_layout:
        _set_rng_state(loaded["rng_state"][0])
    return state


def load_weights(path: Path, chunks, arch: ExaoneArch, optimizer=None) -> list[str]:
    """Weights only (a new stage, a teacher, an HF-converted checkpoint); with ``optimizer``,
    its state too (``init.load=full``). Returns the architecture changes allowed between
    stages (e.g. a new RoPE base).

    Without ``optimizer``, call it before the optimizer is built (mixed-precision optimizers
    copy their fp32 main weights from the model when they are created)."""
    from megatron.core import dist_checkpointing

    changes = check_arch_compatible(read_checkpoint_arch(path), arch, path, resume=False)
    sd = {k: _without_absent_extra_state(v, _stored_keys(path))
          for k, v in model_sharded_state_dict(chunks).items()}
    if optimizer is not None:
        _materialize_optimizer_state(optimizer)
        sd["optimizer"] = optimizer.sharded_state_dict(dict(sd), is_loading=True,
                                                       metadata=OPTIMIZER_METADATA)
    loaded = dist_checkpointing.load(sd, str(path))
    _load_model(chunks, loaded)
    if optimizer is not None:
        _load_optimizer(optimizer, loaded["optimizer"])
    return changes


def _load_optimizer(optimizer, state: dict) -> None:
    from nemo_exaone.runtime.megatron_compat import unshare_adam_steps

    optimizer.load_state_dict(state)
    unshare_adam_steps(optimizer)


def _stored_keys(path: Path) -> set[str]:
    from torch.distributed.checkpoint import FileSystemReader

    return set(FileSystemReader(str(path)).read_metadata().state_dict_metadata)


def _without_absent_extra_state(sharded, stored: set[str]):
    """Drop ``_extra_state`` objects the checkpoint lacks: a Transformer Engine model reading
    a checkpoint written with the local layer spec (CPU) keeps their defaults."""
    from megatron.core.dist_checkpointing.mapping import ShardedObject

    if isinstance(sharded, dict):
        out = {k: _without_absent_extra_state(v, stored) for k, v in sharded.items()}
        return {k: v for k, v in out.items() if v is not None}
    if isinstance(sharded, ShardedObject) and sharded.key.endswith(EXTRA_STATE) \
            and sharded.unique_key not in stored:
        return None
    return sharded


def _load_model(chunks, loaded: dict) -> None:
    states = [loaded["model"]] if len(chunks) == 1 else [loaded[f"model{i}"]
                                                           for i in range(len(chunks))]
    for chunk, state in zip(chunks, states):
        result = unwrap(chunk).load_state_dict(state, strict=False)
        missing = [k for k in result.missing_keys if not k.endswith(EXTRA_STATE)]
        if missing or result.unexpected_keys:
            raise ValueError(f"checkpoint does not fit the model: missing {missing}, "
                             f"unexpected {list(result.unexpected_keys)}")


def loaded_arch_summary(path: Path) -> dict[str, Any]:
    meta = path / METADATA_FILE
    return json.loads(meta.read_text()) if meta.is_file() else {}
