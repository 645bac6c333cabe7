"""A reward-model checkpoint made from a language-model checkpoint, for the tests that need
reward models saved by the training stack (averaging, the preference builder)."""

from __future__ import annotations

from pathlib import Path

import torch


def reward_checkpoint(lm: Path, target: Path, arch, head_scale: float) -> Path:
    """A reward model (the backbone of ``lm`` plus the fixed-seed head times
    ``head_scale``), saved by the training stack (dist_checkpointing) with ``lm``'s tokenizer."""
    from nemo_exaone.alignment.reward_model import HEAD_NAME, attach_reward_head
    from nemo_exaone.checkpoint.identity import recorded_identity, write_identity
    from nemo_exaone.checkpoint.mcore_checkpoint import (
        load_mcore_checkpoint,
        save_mcore_checkpoint,
    )
    from nemo_exaone.model.builder import build_model_chunks
    from nemo_exaone.runtime.distributed import destroy_distributed, init_distributed

    try:
        init_distributed()
        chunks = build_model_chunks(arch)
        load_mcore_checkpoint(chunks, lm, arch)
        attach_reward_head(chunks[0])
        with torch.no_grad():
            getattr(chunks[0], HEAD_NAME).weight.mul_(head_scale)
        save_mcore_checkpoint(chunks, target, arch)
        write_identity(target, recorded_identity(lm))
    finally:
        destroy_distributed()
    return target
