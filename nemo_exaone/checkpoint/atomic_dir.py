"""Write a checkpoint directory under a temporary name; rename it into place only when complete.

A crash, an exception or a kill therefore never leaves a directory at the requested path
that looks like a checkpoint. The temporary name is derived from the target (``.NAME.partial``)
so every rank of a job agrees on it, and a leftover from an interrupted run to the same
target is removed by the next run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path


def partial_path(target: Path) -> Path:
    return target.parent / f".{target.name}.partial"


def check_target(target: Path, overwrite: bool) -> None:
    """Refuse early (before any work) to replace an existing non-empty directory."""
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"{target} exists and is not a directory")
    if target.exists() and any(target.iterdir()) and not overwrite:
        raise FileExistsError(f"{target} already exists and is not empty; choose another "
                              "output directory or pass --overwrite")


def prepare_partial(target: Path) -> Path:
    tmp = partial_path(target)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def publish(tmp: Path, target: Path) -> None:
    """Move the finished ``tmp`` to ``target`` (replacing an old one), durably."""
    old = target.parent / f".{target.name}.old"
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    _fsync_dir(target.parent)
    if old.exists():
        shutil.rmtree(old)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``target`` when the block succeeds."""
    target = Path(target).absolute()
    check_target(target, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = prepare_partial(target)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    publish(tmp, target)
