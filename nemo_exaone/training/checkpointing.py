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
(``fully_sharded_model_space`` for the distributed optimizer), so it reshards too.
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
METADATA_FILE = "nemo_exaone_training.json"
FORMAT = "nemo_exaone.training.checkpoint/1"
OPTIMIZER_METADATA = {"distrib_optim_sharding_type": "fully_sharded_model_space"}
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


def _full_state_dict(chunks, optimizer, scheduler, state: TrainState, layout: Layout,
                     is_loading: bool, with_rng: bool) -> dict:
    sd = model_sharded_state_dict(chunks)
    model_sd = dict(sd)
    sd["optimizer"] = optimizer.sharded_state_dict(model_sd, is_loading=is_loading,
                                                   metadata=OPTIMIZER_METADATA)
    sd["train_state"] = asdict(state)
    sd["scheduler"] = scheduler.state_dict()
    sd["layout"] = asdict(layout)
    if with_rng:
        sd["rng_state"] = _rng_sharded_object(layout)
    return sd


# ------------------------------------------------------------------ save
class CheckpointSaver:
    """Saves checkpoints under ``root`` atomically; asynchronously on CUDA if asked."""

    def __init__(self, root: str | Path, arch: ExaoneArch, async_save: bool = False,
                 keep_last: int | None = None) -> None:
        self.root = Path(root)
        self.arch = arch
        self.keep_last = keep_last
        self.async_save = bool(async_save and torch.cuda.is_available())
        self._queue = None
        if self.async_save:
            from megatron.core.dist_checkpointing.strategies.async_utils import AsyncCallsQueue

            self._queue = AsyncCallsQueue()

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
        request = dist_checkpointing.save(sd, str(tmp), async_sharded_save=self.async_save)

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
    state = TrainState(**common["train_state"])
    sd = _full_state_dict(chunks, optimizer, scheduler, state, layout, is_loading=True,
                          with_rng=same_layout)
    for key in ("train_state", "scheduler", "layout"):
        sd.pop(key)
    loaded = dist_checkpointing.load(sd, str(path))
    _load_model(chunks, loaded)
    optimizer.load_state_dict(loaded["optimizer"])
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
    loader = _checkpoint_module_loader(path)
    if optimizer is None and loader is not None:
        # The checkpoint module's loader also bridges layer specs (TE <-> local extra state).
        loader(chunks, path, None)
        return changes
    sd = model_sharded_state_dict(chunks)
    if optimizer is not None:
        sd["optimizer"] = optimizer.sharded_state_dict(dict(sd), is_loading=True,
                                                       metadata=OPTIMIZER_METADATA)
    loaded = dist_checkpointing.load(sd, str(path))
    _load_model(chunks, loaded)
    if optimizer is not None:
        optimizer.load_state_dict(loaded["optimizer"])
    return changes


def _checkpoint_module_loader(path: Path):
    """``nemo_exaone.checkpoint``'s weights loader, or None (then dist_checkpointing directly).

    Used only for directories that carry its metadata file (HF-converted and training
    checkpoints both do)."""
    if not (path / "nemo_exaone.json").is_file():
        return None
    try:
        from nemo_exaone.checkpoint.mcore_checkpoint import load_mcore_checkpoint
    except ImportError:
        return None
    return load_mcore_checkpoint


def _load_model(chunks, loaded: dict) -> None:
    if len(chunks) == 1:
        unwrap(chunks[0]).load_state_dict(loaded["model"])
    else:
        for i, chunk in enumerate(chunks):
            unwrap(chunk).load_state_dict(loaded[f"model{i}"])


def loaded_arch_summary(path: Path) -> dict[str, Any]:
    meta = path / METADATA_FILE
    return json.loads(meta.read_text()) if meta.is_file() else {}
