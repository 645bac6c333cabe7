"""Megatron-Core checkpoints of EXAONE: the one place that saves, loads, validates, resolves
and describes them, for the converter, the training loop and every stage.

Public API (imported lazily, so ``import nemo_exaone.checkpoint`` stays cheap):

- :func:`convert_hf_to_mcore` / :func:`convert_mcore_to_hf`: the ``nemo-exaone convert``
  commands as functions (single process; output loads at any TP/PP).
- :func:`save_mcore_checkpoint` / :func:`load_mcore_checkpoint` / :func:`load_stage_weights`:
  model weights from training code, on every rank, in any TP/PP layout
  (:mod:`.mcore_checkpoint`); :class:`CheckpointSaver` / :func:`load_training_state`: the
  full training state (:mod:`.training_state`).
- :func:`locate_checkpoint` / :func:`resolve_checkpoint`: what a user's path means (a run
  directory, its ``checkpoints/``, an ``iter_N``), the newest intact checkpoint.
- :func:`verify_dist_checkpoint`: every file a checkpoint's metadata lists, with its size.
- :func:`load_hf_weights`: HF weights straight into a live sharded model.
- :func:`read_checkpoint_arch`: the architecture a checkpoint records (to rebuild its model).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "convert_hf_to_mcore": "nemo_exaone.checkpoint.hf_to_mcore",
    "convert_mcore_to_hf": "nemo_exaone.checkpoint.mcore_to_hf",
    "save_mcore_checkpoint": "nemo_exaone.checkpoint.mcore_checkpoint",
    "load_mcore_checkpoint": "nemo_exaone.checkpoint.mcore_checkpoint",
    "load_stage_weights": "nemo_exaone.checkpoint.mcore_checkpoint",
    "CheckpointSaver": "nemo_exaone.checkpoint.training_state",
    "load_training_state": "nemo_exaone.checkpoint.training_state",
    "locate_checkpoint": "nemo_exaone.checkpoint.locate",
    "resolve_checkpoint": "nemo_exaone.checkpoint.locate",
    "verify_dist_checkpoint": "nemo_exaone.checkpoint.verify",
    "load_hf_weights": "nemo_exaone.checkpoint.hf_weights",
    "read_checkpoint_arch": "nemo_exaone.checkpoint.metadata",
    "CheckpointError": "nemo_exaone.checkpoint.errors",
    "EXAONE_HF_TABLE": "nemo_exaone.checkpoint.exaone_hf",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
