"""Find the checkpoint a path means, and the newest one that is intact.

Every command and stage that takes a checkpoint accepts what a user would pass: a run
directory (``<run.dir>``: its ``checkpoints/latest``), its ``checkpoints/`` folder, an
``iter_N`` directory, or a converted checkpoint; :func:`locate_checkpoint` says which
checkpoint it took and why. A checkpoint named by ``latest`` that is damaged (a file missing,
truncated or unreadable) is skipped for the newest intact one before it, with a note naming
the file, unless the caller asks to stop instead (``checkpoint.fallback=false``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from nemo_exaone.checkpoint.errors import CheckpointError
from nemo_exaone.runtime.outputs import remove_path

LATEST_FILE = "latest"
_ITER_RE = re.compile(r"^iter_(\d+)$")


def checkpoint_name(step: int) -> str:
    return f"iter_{step:07d}"


def checkpoint_step(path: Path) -> int:
    """The step of a training checkpoint (0 for a converted one)."""
    from nemo_exaone.checkpoint.metadata import TRAINING_METADATA_NAME, read_training_metadata

    if not (path / TRAINING_METADATA_NAME).exists():
        return 0
    return int(read_training_metadata(path)["train_state"]["step"])


_DESCRIPTORS = ("metadata.json", "nemo_exaone.json", "nemo_exaone_training.json")


def is_checkpoint_dir(path: Path) -> bool:
    """A directory that holds one checkpoint (as opposed to a run or a checkpoint root),
    complete or not."""
    return any((path / name).is_file() for name in (*_DESCRIPTORS, "common.pt", ".metadata")) \
        or any(path.glob("*.distcp"))


def check_intact(path: Path) -> None:
    """Raise :class:`CheckpointError` naming the first missing, truncated or unreadable file
    of checkpoint ``path`` (sizes and small files only: cheap at any model size)."""
    import json

    import torch

    from nemo_exaone.checkpoint.metadata import (
        METADATA_NAME,
        TRAINING_METADATA_NAME,
        read_metadata,
        read_training_metadata,
    )
    from nemo_exaone.checkpoint.verify import verify_dist_checkpoint

    verify_dist_checkpoint(path)
    config = path / "metadata.json"
    try:
        json.loads(config.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{config} is unreadable (truncated or corrupt: {exc})") from exc
    common = path / "common.pt"  # absent with megatron-core >= 0.19 (common state in DCP)
    try:
        if common.exists():
            torch.load(common, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises several kinds for a cut or garbled archive
        raise CheckpointError(f"{common} is unreadable (truncated or corrupt: "
                              f"{type(exc).__name__}: {exc})") from exc
    if (path / METADATA_NAME).exists():  # absent: a foreign checkpoint, the loader decides
        read_metadata(path)
    if (path / TRAINING_METADATA_NAME).exists():
        read_training_metadata(path)


def _step_of(path: Path) -> int | None:
    match = _ITER_RE.match(path.name)
    return int(match[1]) if match else None


def checkpoints_in(root: Path) -> list[Path]:
    """``iter_N`` directories under ``root``, newest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _step_of(p) is not None]
    return sorted(found, key=_step_of, reverse=True)


def read_latest(root: Path) -> Path | None:
    """The checkpoint ``root/latest`` names; None when there is no pointer yet.

    A pointer that is empty, garbled or names a missing directory is an error naming it.
    """
    pointer = root / LATEST_FILE
    if not pointer.is_file():
        return None
    try:
        name = pointer.read_text(encoding="utf-8").strip()
    except UnicodeDecodeError:
        name = ""
    if not _ITER_RE.match(name):
        raise CheckpointError(f"{pointer} is corrupt: it should name an iter_N directory, "
                              f"found {name[:80]!r}")
    path = root / name
    if not path.is_dir():
        raise CheckpointError(f"{pointer} names {name}, which does not exist in {root}")
    return path


@dataclass
class Located:
    """The checkpoint a path resolved to, and what a user should be told about it."""

    path: Path | None
    note: str = ""
    skipped: list[str] = field(default_factory=list)  # damaged checkpoints passed over


def newest_intact(root: Path, *, fallback: bool = True) -> Located:
    """The checkpoint ``root/latest`` names if intact; else, with ``fallback``, the newest
    intact ``iter_N`` before it (each damaged one listed with the file at fault)."""
    problems: list[str] = []
    candidates: list[Path] = []
    try:
        latest = read_latest(root)
    except CheckpointError as exc:
        latest = None
        problems.append(str(exc))
        if not fallback:
            raise CheckpointError(f"{exc}; set checkpoint.fallback=true to resume from the "
                                  "newest intact checkpoint instead") from None
    everything = checkpoints_in(root)
    if latest is not None:
        limit = _step_of(latest)
        candidates = [latest] + [p for p in everything if p != latest and _step_of(p) < limit]
    elif problems:
        candidates = everything
    for path in candidates:
        try:
            check_intact(path)
        except CheckpointError as exc:
            if not fallback:
                raise CheckpointError(f"the latest checkpoint is damaged: {exc}; set "
                                      "checkpoint.fallback=true to resume from the newest "
                                      "intact checkpoint instead") from None
            problems.append(str(exc))
            continue
        return Located(path, skipped=problems)
    if problems:
        raise CheckpointError(f"no intact checkpoint in {root}: " + " | ".join(problems))
    return Located(None)


def locate_checkpoint(path: str | os.PathLike) -> Located:
    """The checkpoint a user means by ``path`` (see the module docstring), with a note."""
    given = Path(path)
    if not given.exists():
        raise FileNotFoundError(f"checkpoint path {given} does not exist")
    if not given.is_dir():
        raise CheckpointError(f"checkpoint path {given} is a file; pass a run directory, its "
                              "checkpoints/ folder, or a checkpoint (iter_N) directory")
    if is_checkpoint_dir(given):
        # Writers add these last: without them it is an unfinished write, which the loader
        # refuses with its own message; with them, every file they list must be whole.
        if any((given / name).is_file() for name in _DESCRIPTORS):
            check_intact(given)
        return Located(given, note=f"using checkpoint {given}")
    for root, what in ((given, "checkpoint folder"), (given / "checkpoints", "run directory")):
        if not root.is_dir() or not ((root / LATEST_FILE).exists() or checkpoints_in(root)):
            continue
        found = newest_intact(root)
        if found.path is None:  # iter_N directories but no latest pointer yet
            found = _newest_of(checkpoints_in(root))
        note = f"using checkpoint {found.path} (the latest intact checkpoint of {what} {given})"
        if found.skipped:
            note += "; skipped damaged: " + " | ".join(found.skipped)
        return Located(found.path, note=note, skipped=found.skipped)
    raise FileNotFoundError(
        f"{given} holds no checkpoint: pass a run directory (with checkpoints/latest), its "
        "checkpoints/ folder, or a checkpoint directory (iter_N, or a converted checkpoint)")


def _newest_of(paths: list[Path]) -> Located:
    problems = []
    for path in paths:
        try:
            check_intact(path)
            return Located(path, skipped=problems)
        except CheckpointError as exc:
            problems.append(str(exc))
    raise CheckpointError("no intact checkpoint: " + " | ".join(problems))


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """:func:`locate_checkpoint` for callers that need only the directory."""
    return locate_checkpoint(path).path


def clean_temporaries(root: Path) -> list[Path]:
    """Remove checkpoint temporaries in ``root`` not made by this process (the caller holds
    the run's lock, so no other writer is alive), and legacy ``.iter_N.tmp`` directories."""
    removed = []
    if not root.is_dir():
        return removed
    mine = f".tmp-{os.getpid()}-"
    for tmp in [*root.glob(".iter_*.tmp*"), *root.glob(f".{LATEST_FILE}.tmp-*")]:
        if mine in tmp.name:
            continue
        remove_path(tmp)
        removed.append(tmp)
    return removed
