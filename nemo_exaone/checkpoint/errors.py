"""Errors raised for bad checkpoints. Subclasses of ValueError so the CLI prints them cleanly."""

from __future__ import annotations


class CheckpointError(ValueError):
    """A checkpoint is malformed or does not match the expected architecture.

    Messages name the tensor and the file (or field) at fault.
    """
