"""Placeholder while this conversion is being written; registers no sub-command yet."""

from __future__ import annotations


def register(sub, common) -> None:  # noqa: ARG001 - filled in by its issue's work
    return None
