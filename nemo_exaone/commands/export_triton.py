"""Placeholder while this export target is being written; registers no sub-command yet."""

from __future__ import annotations


def register(sub) -> None:  # noqa: ARG001 - filled in by its issue's work
    return None
