"""Every output of every command is written through this module: refuse, lock, write, verify, rename.

The rules (one place, so no command can forget one):

1. **Never over an input.** :func:`refuse_overlap` fails before any work when an output
   resolves to an input, to a folder that holds one, or to something inside an input folder
   that the command would replace.
2. **Never over existing work without ``--overwrite``.** :func:`check_output` refuses an
   existing non-empty output unless ``overwrite`` is set (the same flag in every command).
3. **One writer.** :func:`output_lock` takes an exclusive ``fcntl`` lock on ``.NAME.lock``
   beside the output (or ``.lock`` inside a run directory); a second writer is refused with
   the holder's pid, host, start time and command. The kernel drops the lock when its process
   dies, so a killed run never leaves a lock that blocks the next one; a holder that finishes
   removes the lock file.
4. **Nothing half-written is published.** Outputs are written under temporary names unique to
   the process (``.NAME.tmp-<pid>-<random>``), verified when the caller gives a check, and
   renamed into place (``os.replace``; a directory is swapped in with its previous version
   removed only after the new one is in place). A temporary left by a killed process is
   removed by the next writer of the same output (its pid no longer runs).

We write this ourselves because the pieces exist only separately (``tempfile`` has unique
names but no publish step or lock, dist_checkpointing writes in place); one small module is
easier to trust than the four partial copies this replaced.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import shutil
import socket
import sys
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

__all__ = [
    "OutputLockedError", "refuse_overlap", "check_output", "output_lock", "atomic_directory",
    "atomic_files", "write_text_atomic", "temporary_name", "remove_stale_temporaries",
    "fsync_dir",
]

PathLike = str | os.PathLike


class OutputLockedError(RuntimeError):
    """Another process is writing the same output or run directory."""


# --- 1 and 2: refuse before any work ------------------------------------------------------

def _resolved(path: PathLike) -> Path:
    return Path(path).expanduser().resolve()


def refuse_overlap(output: PathLike, inputs: Iterable[PathLike | None], *,
                   output_flag: str = "output", input_flags: Sequence[str] | None = None) -> None:
    """Raise ``ValueError`` when writing ``output`` could touch any of ``inputs``.

    Refused: the output is an input; the output is a folder holding an input (replacing it
    would delete the input); the output lies inside an input folder (an input directory is
    read whole, e.g. a checkpoint, and must stay as it was).
    """
    out = _resolved(output)
    given = list(inputs)
    flags = list(input_flags) if input_flags is not None else ["input"] * len(given)
    for flag, item in zip(flags, given):
        if item is None:
            continue
        src = _resolved(item)
        if out == src:
            raise ValueError(f"{output_flag} {output} is the same path as {flag} {item}; "
                             "writing it would destroy the input. Choose another output path")
        if src.is_relative_to(out):
            raise ValueError(f"{output_flag} {output} is a folder that holds {flag} {item}; "
                             "writing it would destroy the input. Choose another output path")
        if src.is_dir() and out.is_relative_to(src):
            raise ValueError(f"{output_flag} {output} lies inside {flag} {item}; write outputs "
                             "outside the input directory")


def check_output(target: PathLike, overwrite: bool, *, flag: str = "output") -> None:
    """Refuse an existing non-empty output unless ``overwrite`` (``--overwrite``) is set."""
    path = Path(target)
    if not path.exists():
        return
    if path.is_dir():
        if any(path.iterdir()) and not overwrite:
            raise FileExistsError(f"{flag} {path} exists and is not empty; choose another path "
                                  "or pass --overwrite to replace it")
    elif path.stat().st_size > 0 and not overwrite:
        raise FileExistsError(f"{flag} {path} exists; choose another path or pass --overwrite "
                              "to replace it")


# --- 3: one writer ------------------------------------------------------------------------

def lock_path_for(target: PathLike, *, inside: bool = False) -> Path:
    """``DIR/.lock`` for a directory we own (a run directory), else ``.NAME.lock`` beside it."""
    path = Path(target).absolute()
    return path / ".lock" if inside else path.parent / f".{path.name}.lock"


def _holder_description(text: str) -> str:
    try:
        info = json.loads(text)
        return (f"pid {info['pid']} on host {info['host']} since {info['since']} "
                f"(command: {info['command']})")
    except (ValueError, KeyError, TypeError):
        return "another process"


@contextlib.contextmanager
def output_lock(target: PathLike, *, inside: bool = False) -> Iterator[Path]:
    """Hold an exclusive lock on ``target`` for the block; refuse if another process holds it."""
    lock = lock_path_for(target, inside=inside)
    lock.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = _holder_description(Path(lock).read_text(encoding="utf-8", errors="replace"))
            raise OutputLockedError(
                f"{target} is being written by {holder}; wait for it to finish or stop it "
                f"(lock file {lock})") from None
        # The holder before us removes the file when it lets go: if it did so between our open
        # and our lock, we hold a lock on a file nobody else will see; open it again.
        try:
            current = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:
            break
        os.close(fd)
    try:
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "since": datetime.datetime.now().isoformat(timespec="seconds"),
                "command": " ".join(sys.argv)[:500]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        yield lock
    finally:
        # Removed while still held (the re-check above makes that safe), so no lock files
        # pile up beside finished outputs; a killed holder leaves an unlocked file behind.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)
        os.close(fd)


# --- 4: temporaries, verification, publication --------------------------------------------

def temporary_name(final: PathLike) -> Path:
    """A sibling of ``final`` unique to this process (same filesystem, so renames are atomic)."""
    path = Path(final)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host (one we may not signal counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(final: PathLike) -> list[Path]:
    """Delete temporaries of ``final`` left by processes that no longer run; return them."""
    path = Path(final)
    if not path.parent.is_dir():
        return []
    removed = []
    for tmp in path.parent.glob(f".{path.name}.tmp-*"):
        pid_text = tmp.name[len(f".{path.name}.tmp-"):].split("-", 1)[0]
        if not pid_text.isdigit() or pid_alive(int(pid_text)):
            continue
        remove_path(tmp)
        removed.append(tmp)
    return removed


def remove_path(path: Path) -> None:
    """Delete a temporary file or directory tree (a link is removed, never followed)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def fsync_dir(path: PathLike) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def publish_directory(tmp: Path, target: Path) -> None:
    """Swap the finished ``tmp`` into ``target``; an old ``target`` is removed afterwards."""
    old = None
    if target.exists():
        old = temporary_name(target).with_name(temporary_name(target).name + "-old")
        os.replace(target, old)
    os.replace(tmp, target)
    fsync_dir(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_directory(target: PathLike, *, overwrite: bool = False,
                     inputs: Iterable[PathLike | None] = (), input_flags: Sequence[str] | None = None,
                     flag: str = "output", verify: Callable[[Path], None] | None = None,
                     lock: bool = True) -> Iterator[Path]:
    """Yield a fresh temporary directory that becomes ``target`` when the block succeeds.

    Checks (overlap with ``inputs``, existing output) run before the block; ``verify(tmp)``
    runs after it and may raise to stop publication. On any error the temporary is deleted
    and ``target`` is left exactly as it was.
    """
    final = Path(target).absolute()
    refuse_overlap(final, inputs, output_flag=f"{flag}", input_flags=input_flags)
    check_output(final, overwrite, flag=flag)
    if final.exists() and not final.is_dir():
        raise FileExistsError(f"{flag} {final} exists and is not a directory")
    final.parent.mkdir(parents=True, exist_ok=True)
    with output_lock(final) if lock else contextlib.nullcontext():
        # Again under the lock: a writer that held it may have published meanwhile.
        check_output(final, overwrite, flag=flag)
        remove_stale_temporaries(final)
        tmp = temporary_name(final)
        tmp.mkdir()
        try:
            yield tmp
            if verify is not None:
                verify(tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        publish_directory(tmp, final)


@contextlib.contextmanager
def atomic_files(finals: Sequence[PathLike], *, overwrite: bool = False,
                 inputs: Iterable[PathLike | None] = (), input_flags: Sequence[str] | None = None,
                 flags: Sequence[str] | None = None, lock: bool = True) -> Iterator[list[Path]]:
    """Yield temporary paths for ``finals``; rename each into place on success, delete on error.

    Files the block did not create are not renamed (optional outputs). Renames follow the
    order of ``finals``: put data files before the files that describe them (``.bin`` before
    ``.idx``) so a reader polling for the last name sees complete data.
    """
    paths = [Path(p).absolute() for p in finals]
    names = list(flags) if flags is not None else ["output"] * len(paths)
    inputs = list(inputs)
    for i, (name, path) in enumerate(zip(names, paths)):
        refuse_overlap(path, inputs, output_flag=name, input_flags=input_flags)
        for other_name, other in zip(names[i + 1:], paths[i + 1:]):
            if other == path:
                raise ValueError(f"{name} and {other_name} are the same path {path}; "
                                 "give each output its own path")
        check_output(path, overwrite, flag=name)
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        if lock:
            for path in paths:
                stack.enter_context(output_lock(path))
        for name, path in zip(names, paths):
            check_output(path, overwrite, flag=name)  # again, under the lock
            remove_stale_temporaries(path)
        temps = [temporary_name(p) for p in paths]
        try:
            yield temps
        except BaseException:
            for tmp in temps:
                if tmp.is_dir():
                    shutil.rmtree(tmp, ignore_errors=True)
                else:
                    tmp.unlink(missing_ok=True)
            raise
        for tmp, final in zip(temps, paths):
            if tmp.exists():
                os.replace(tmp, final)
        for parent in {p.parent for p in paths}:
            fsync_dir(parent)


def write_text_atomic(path: PathLike, text: str) -> None:
    """Replace ``path`` with ``text`` in one rename (readers see the old or the new text)."""
    final = Path(path)
    tmp = temporary_name(final)
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
