"""Errors raised for bad checkpoints: an input error (the CLI prints it in one line, exit 2)."""

from __future__ import annotations

from nemo_exaone.config.errors import InputError


class CheckpointError(InputError):
    """A checkpoint is malformed, damaged or does not match the expected architecture.

    Messages name the tensor and the file (or field) at fault.
    """
