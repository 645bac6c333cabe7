"""Write outputs under temporary names and rename them into place only on success.

A crashed or failed run must never leave a file that looks finished: a half-written ``.bin``
next to a stale ``.idx`` silently corrupts training. ``atomic_outputs`` hands out temporary
paths in the destination directory (so the final ``os.replace`` is atomic on one filesystem)
and deletes them if the body raises.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_outputs", "atomic_directory"]


def _temporary_sibling(path: Path, tag: str) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{tag}")


@contextmanager
def atomic_outputs(final_paths: Sequence[str | Path]) -> Iterator[list[Path]]:
    """Yield temporary paths for ``final_paths``; rename them all on success, delete on error.

    Files the body did not create are simply not renamed (a chat dataset writes a mask file,
    a text dataset does not), so callers may request optional outputs.
    """
    finals = [Path(p) for p in final_paths]
    for final in finals:
        final.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    temps = [_temporary_sibling(final, tag) for final in finals]
    try:
        yield temps
    except BaseException:
        for temp in temps:
            temp.unlink(missing_ok=True)
        raise
    # Rename the data files before the files that describe them (.idx after .bin), so that a
    # reader polling for the last name sees complete data; callers order paths that way.
    for temp, final in zip(temps, finals):
        if temp.exists():
            os.replace(temp, final)


@contextmanager
def atomic_directory(final_dir: str | Path) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``final_dir`` on success (removed on error)."""
    final = Path(final_dir)
    final.parent.mkdir(parents=True, exist_ok=True)
    temp = _temporary_sibling(final, uuid.uuid4().hex[:8])
    temp.mkdir()
    try:
        yield temp
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    if final.exists():
        shutil.rmtree(final)
    os.replace(temp, final)
