"""Placeholder while ``nemo-exaone serve`` is being written; registers nothing yet."""

from __future__ import annotations


def register(subparsers) -> None:  # noqa: ARG001 - filled in by its issue's work
    return None
