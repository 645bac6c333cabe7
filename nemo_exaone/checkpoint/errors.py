"""Errors raised for bad checkpoints: an input error (the CLI prints it in one line, exit 2)."""

from __future__ import annotations

from typing import Any

from nemo_exaone.config.errors import InputError


class CheckpointError(InputError):
    """A checkpoint is malformed, damaged or does not match the expected architecture.

    Messages name the tensor and the file (or field) at fault.
    """


def nonfinite_error(source: Any, mapping: Any) -> CheckpointError:
    """The error for HF weights holding NaN/Inf, naming the tensor, its file and the first bad
    index (``source``: an ``HFSource``; ``mapping``: the bound mapping being read)."""
    import torch

    parts = source.weights.read(mapping.targets)
    for name in mapping.targets:
        bad = ~torch.isfinite(parts[name])
        if bool(bad.any()):
            first = tuple(int(i) for i in bad.nonzero()[0])
            return CheckpointError(
                f"tensor {name!r} in {source.weights.tensors[name].file} holds "
                f"{int(bad.sum())} NaN/Inf value(s) (first at index {first}); the source "
                "checkpoint is damaged: refusing to load it")
    return CheckpointError(f"tensor(s) {', '.join(mapping.targets)} give NaN/Inf when fused "
                           f"into {mapping.megatron}")
