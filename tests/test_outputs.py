"""runtime/outputs: the rules every command's outputs follow (overlap, --overwrite, one writer,
stale temporaries, nothing published on failure), on real files and real processes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from nemo_exaone.runtime.outputs import (
    OutputLockedError,
    atomic_directory,
    atomic_files,
    check_output,
    lock_path_for,
    output_lock,
    refuse_overlap,
    remove_stale_temporaries,
    temporary_name,
    write_text_atomic,
)


def _tree(path):
    return {str(p.relative_to(path)): p.read_bytes() if p.is_file() else None
            for p in sorted(path.rglob("*"))}


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ---- 1: never over an input --------------------------------------------------------------

def test_refuse_overlap(tmp_path):
    data = tmp_path / "v"
    data.mkdir()
    corpus = data / "corpus.jsonl"
    corpus.write_text("{}\n")
    with pytest.raises(ValueError, match="--output .* is the same path as --input"):
        refuse_overlap(corpus, [corpus], output_flag="--output", input_flags=["--input"])
    with pytest.raises(ValueError, match="is a folder that holds --input"):
        refuse_overlap(data, [corpus], output_flag="--output", input_flags=["--input"])
    with pytest.raises(ValueError, match="is a folder that holds"):
        refuse_overlap(tmp_path / "v" / ".." / "v", [corpus])  # resolved, not compared as text
    with pytest.raises(ValueError, match="lies inside --ckpt"):
        refuse_overlap(data / "export", [data], output_flag="--out", input_flags=["--ckpt"])
    os.symlink(data, tmp_path / "link")
    with pytest.raises(ValueError, match="is a folder that holds"):
        refuse_overlap(tmp_path / "link", [corpus])
    refuse_overlap(tmp_path / "elsewhere", [corpus, None])  # a sibling is fine
    refuse_overlap(data / "out.jsonl", [corpus])  # a file beside a file input is fine


# ---- 2: never over existing work without --overwrite --------------------------------------

def test_check_output(tmp_path):
    check_output(tmp_path / "absent", overwrite=False)
    (tmp_path / "empty").mkdir()
    check_output(tmp_path / "empty", overwrite=False)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(FileExistsError, match="--out .* exists and is not empty.*--overwrite"):
        check_output(tmp_path / "full", overwrite=False, flag="--out")
    check_output(tmp_path / "full", overwrite=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="--overwrite"):
        check_output(tmp_path / "file", overwrite=False)
    (tmp_path / "zero").write_text("")
    check_output(tmp_path / "zero", overwrite=False)


# ---- 3: one writer -----------------------------------------------------------------------

HOLDER = textwrap.dedent("""
    import sys, time
    from nemo_exaone.runtime.outputs import output_lock
    with output_lock(sys.argv[1]):
        print("locked", flush=True)
        sys.stdin.read()  # hold until the test closes our stdin
""")


def test_lock_refuses_a_second_writer_and_names_the_holder(tmp_path):
    target = tmp_path / "ckpt"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(target)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(OutputLockedError) as info:
            with output_lock(target):
                pass
        message = str(info.value)
        assert f"{target} is being written by pid {proc.pid} on host" in message
        assert "(command: -c " in message and str(lock_path_for(target)) in message
        with pytest.raises(OutputLockedError):  # and atomic writers take the same lock
            with atomic_directory(target):
                pass
        assert not target.exists()
    finally:
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0
    assert not lock_path_for(target).exists()  # the holder removed its lock file
    with output_lock(target) as lock:  # free again
        assert lock.exists()
    assert not lock.exists()


def test_lock_of_a_killed_holder_is_free(tmp_path):
    target = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(target)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    proc.kill()
    proc.wait()
    assert lock_path_for(target).exists()  # left behind, but no longer locked
    with output_lock(target):
        pass


def test_lock_inside_a_run_directory(tmp_path):
    with output_lock(tmp_path, inside=True) as lock:
        assert lock == tmp_path / ".lock"
        with pytest.raises(OutputLockedError):  # another open file description: refused too
            with output_lock(tmp_path, inside=True):
                pass


# ---- 4: temporaries, verification, publication --------------------------------------------

def test_stale_temporaries_of_dead_processes_are_removed(tmp_path):
    final = tmp_path / "out"
    dead = final.with_name(f".out.tmp-{_dead_pid()}-abcd1234")
    dead.mkdir()
    (dead / "half.distcp").write_bytes(b"x")
    dead_file = final.with_name(f".out.tmp-{_dead_pid()}-ffff0000")
    dead_file.write_bytes(b"y")
    alive = temporary_name(final)  # ours: this process runs
    alive.mkdir()
    other = tmp_path / f".other.tmp-{_dead_pid()}-00000000"
    other.write_text("not ours")
    assert sorted(remove_stale_temporaries(final)) == sorted([dead, dead_file])
    assert not dead.exists() and not dead_file.exists() and alive.exists() and other.exists()
    (tmp_path / f".out.tmp-{_dead_pid()}-1").mkdir()
    with atomic_directory(final) as tmp:  # a writer cleans up before it starts
        assert str(os.getpid()) in tmp.name
        (tmp / "a").write_text("a")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive.name, other.name, "out"])


def test_failure_leaves_the_target_untouched(tmp_path):
    target = tmp_path / "ckpt"
    target.mkdir()
    (target / "old.bin").write_bytes(b"old")
    before = _tree(target)
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_directory(target, overwrite=True) as tmp:
            (tmp / "new.bin").write_bytes(b"half")
            raise RuntimeError("boom")
    assert _tree(target) == before

    def verify(directory):
        if not (directory / "index.json").exists():
            raise ValueError(f"{directory}/index.json is missing")

    with pytest.raises(ValueError, match="index.json is missing"):
        with atomic_directory(target, overwrite=True, verify=verify) as tmp:
            (tmp / "new.bin").write_bytes(b"new")
    assert _tree(target) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temporary, no lock
    with atomic_directory(target, overwrite=True, verify=verify) as tmp:
        (tmp / "index.json").write_text("{}")
    assert _tree(target) == {"index.json": b"{}"}


def test_atomic_files(tmp_path):
    src = tmp_path / "train.jsonl"
    src.write_text("{}\n")
    with pytest.raises(ValueError, match="--out and --report are the same path"):
        with atomic_files([tmp_path / "a", tmp_path / "a"], flags=["--out", "--report"]):
            pass
    with pytest.raises(ValueError, match="--out .* is the same path as --train"):
        with atomic_files([src], inputs=[src], input_flags=["--train"], flags=["--out"]):
            pass
    (tmp_path / "b.idx").write_text("old")
    with pytest.raises(FileExistsError, match="--overwrite"):
        with atomic_files([tmp_path / "b.bin", tmp_path / "b.idx"]):
            pass
    with pytest.raises(KeyError):
        with atomic_files([tmp_path / "b.bin", tmp_path / "b.idx"], overwrite=True) as temps:
            temps[0].write_text("half")
            raise KeyError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.idx", "train.jsonl"]
    assert (tmp_path / "b.idx").read_text() == "old"
    with atomic_files([tmp_path / "b.bin", tmp_path / "b.idx", tmp_path / "b.mask"],
                      overwrite=True) as temps:
        temps[0].write_text("data")
        temps[1].write_text("index")  # b.mask is optional and not written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.bin", "b.idx", "train.jsonl"]
    assert (tmp_path / "b.idx").read_text() == "index"


def test_write_text_atomic(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("old\n")
    write_text_atomic(path, "new\n")
    assert path.read_text() == "new\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]
