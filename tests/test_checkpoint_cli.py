"""``nemo-exaone convert`` end to end: a kill mid-write leaves nothing that looks like a
checkpoint, a rerun completes, and the export restores the HF checkpoint; an output over its
own input, a second writer, an incomplete checkpoint and a missing --tokenizer are refused."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import nemo_exaone.checkpoint.hf_to_mcore as hf_to_mcore
from nemo_exaone.checkpoint.errors import CheckpointError
from nemo_exaone.checkpoint.metadata import read_metadata
from nemo_exaone.checkpoint.safetensors_io import SafetensorsSource
from nemo_exaone.checkpoint.synthetic import write_random_hf_checkpoint
from nemo_exaone.cli import main
from nemo_exaone.config.presets import get_preset
from nemo_exaone.runtime.outputs import output_lock

# ~300 MB in fp32: big enough that writing it takes a while, so the kill lands mid-write.
ARCH = get_preset("tiny").replace(hidden_size=512, intermediate_size=2048, num_layers=16,
                                  vocab_size=16384, num_attention_heads=8,
                                  num_key_value_heads=4, tie_word_embeddings=False)


def _cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nemo_exaone.cli", "convert", *args],
                          capture_output=True, text=True, timeout=300, **kwargs)


def _temporaries(out: Path) -> list[Path]:
    return sorted(out.parent.glob(f".{out.name}.tmp-*"))


@pytest.mark.slow
def test_kill_mid_write_then_rerun_then_export(tmp_path):
    hf = write_random_hf_checkpoint(tmp_path / "hf", ARCH, torch.float32, seed=3,
                                    max_shard_bytes=10**8)
    (hf / "tokenizer_config.json").write_text('{"model_max_length": 32768}')
    out = tmp_path / "mcore"

    proc = subprocess.Popen([sys.executable, "-m", "nemo_exaone.cli", "convert", "hf-to-mcore",
                             "--hf", str(hf), "--out", str(out), "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not any(any(t.glob("*.distcp")) for t in _temporaries(out)):
        assert proc.poll() is None, "conversion ended before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    proc.kill()
    proc.wait()
    assert not out.exists()
    [partial] = _temporaries(out)  # the killed run's temporary, named after its pid
    assert str(proc.pid) in partial.name
    assert not (partial / "nemo_exaone.json").exists()
    with pytest.raises(FileNotFoundError, match="not a complete nemo-exaone checkpoint"):
        read_metadata(partial)
    refused = _cli("mcore-to-hf", "--ckpt", str(partial), "--out", str(tmp_path / "x"))
    assert refused.returncode == 2 and "not a complete nemo-exaone checkpoint" in refused.stderr

    done = _cli("hf-to-mcore", "--hf", str(hf), "--out", str(out), "--tp", "2", "--pp", "2",
                "--quiet")
    assert done.returncode == 0, done.stderr
    assert "hf-to-mcore:" in done.stdout and not _temporaries(out)  # stale one cleaned up
    assert read_metadata(out).extra["intended_parallel"]["tensor_model_parallel_size"] == 2

    back = tmp_path / "hf_back"
    exported = _cli("mcore-to-hf", "--ckpt", str(out), "--out", str(back),
                    "--max-shard-size", "100MB", "--quiet")
    assert exported.returncode == 0, exported.stderr
    assert (back / "tokenizer_config.json").read_text() == '{"model_max_length": 32768}'
    a, b = SafetensorsSource(hf), SafetensorsSource(back)
    assert list(a.tensors) == list(b.tensors)
    for name in a.tensors:
        assert torch.equal(a.read([name])[name], b.read([name])[name]), name


def test_cli_reports_bad_input_cleanly(tmp_path):
    result = _cli("hf-to-mcore", "--hf", str(tmp_path / "nope"), "--out", str(tmp_path / "o"))
    assert result.returncode == 2
    assert "error: HF checkpoint directory" in result.stderr and "Traceback" not in result.stderr
    (tmp_path / "empty").mkdir()
    result = _cli("hf-to-mcore", "--hf", str(tmp_path / "empty"), "--out", str(tmp_path / "o"),
                  "--tp", "3", "--preset", "tiny")
    assert result.returncode == 2 and "tensor_model_parallel_size=3" in result.stderr


# ---- refusals: fast, a tiny checkpoint, the CLI in this process (or a second one) ---------

TINY = get_preset("tiny")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny HF checkpoint (with a tokenizer file) and its Megatron conversion."""
    root = tmp_path_factory.mktemp("tiny")
    hf = write_random_hf_checkpoint(root / "models" / "hf", TINY, torch.float32, seed=1)
    (hf / "tokenizer_config.json").write_text('{"model_max_length": 4096}')
    mcore = root / "models" / "mcore"
    hf_to_mcore.convert_hf_to_mcore(hf, mcore, progress=False)
    return hf, mcore


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def _refused(capsys, *args: str) -> str:
    code = main(["convert", *args, "--quiet"])
    err = capsys.readouterr().err
    assert code == 2, err
    return err


def test_output_over_its_source_is_refused_even_with_overwrite(tiny, capsys):
    hf, mcore = tiny
    before_hf, before_mcore = _snapshot(hf), _snapshot(mcore)
    err = _refused(capsys, "hf-to-mcore", "--hf", str(hf), "--out", str(hf), "--overwrite")
    assert f"--out {hf} is the same path as --hf" in err
    err = _refused(capsys, "hf-to-mcore", "--hf", str(hf), "--out", str(hf.parent),
                   "--overwrite")
    assert f"--out {hf.parent} is a folder that holds --hf" in err
    err = _refused(capsys, "mcore-to-hf", "--ckpt", str(mcore), "--out", str(mcore),
                   "--overwrite")
    assert "is the same path as --ckpt" in err
    err = _refused(capsys, "mcore-to-hf", "--ckpt", str(mcore), "--out", str(mcore / "hf"),
                   "--overwrite")
    assert "lies inside --ckpt" in err
    # the tokenizer to copy is an input too (by default it is carried inside the checkpoint)
    err = _refused(capsys, "mcore-to-hf", "--ckpt", str(mcore), "--out", str(hf),
                   "--tokenizer", str(hf), "--overwrite")
    assert "is the same path as --tokenizer" in err
    assert _snapshot(hf) == before_hf and _snapshot(mcore) == before_mcore


def test_existing_output_needs_overwrite(tiny, tmp_path, capsys):
    hf, _ = tiny
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    err = _refused(capsys, "hf-to-mcore", "--hf", str(hf), "--out", str(out))
    assert "exists and is not empty" in err and "--overwrite" in err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert main(["convert", "hf-to-mcore", "--hf", str(hf), "--out", str(out), "--overwrite",
                 "--quiet"]) == 0
    assert not (out / "keep.txt").exists() and (out / "common.pt").is_file()


def test_second_writer_is_refused_naming_the_holder(tiny, tmp_path):
    """The lock is held by this process (a first conversion, as far as the CLI can tell)."""
    hf, _ = tiny
    out = tmp_path / "mcore"
    with output_lock(out.absolute()):
        result = _cli("hf-to-mcore", "--hf", str(hf), "--out", str(out), "--quiet")
    assert result.returncode == 2, result.stderr
    assert f"is being written by pid {os.getpid()} on host" in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists() and not _temporaries(out)


def test_checkpoint_missing_a_shard_is_never_published(tiny, tmp_path, monkeypatch):
    """A shard lost under the writer (as when two runs shared one temporary directory) fails
    the verification before publication; nothing appears at --out."""
    hf, _ = tiny
    real = hf_to_mcore.write_megatron_files

    def lose_a_shard(directory, layout):
        real(directory, layout)
        sorted(directory.glob("*.distcp"))[3].unlink()

    monkeypatch.setattr(hf_to_mcore, "write_megatron_files", lose_a_shard)
    out = tmp_path / "mcore"
    with pytest.raises(CheckpointError, match=r"__0_\d+\.distcp is missing \(listed in"):
        hf_to_mcore.convert_hf_to_mcore(hf, out, progress=False)
    assert not out.exists() and not _temporaries(out)


def test_missing_tokenizer_dir_is_refused(tiny, tmp_path, capsys):
    """Before, a --tokenizer that does not exist silently fell back to the recorded source."""
    _, mcore = tiny
    out = tmp_path / "hf_out"
    err = _refused(capsys, "mcore-to-hf", "--ckpt", str(mcore), "--out", str(out),
                   "--tokenizer", str(tmp_path / "no_such_tokenizer"))
    assert f"--tokenizer {tmp_path / 'no_such_tokenizer'}: no such directory" in err
    assert not out.exists()


# A conversion that stops before writing its first chunk until the test creates the file
# argv[1]: the real CLI, lock and publication; only the moment is chosen by the test.
HELD_WRITER = """
import sys, time
from pathlib import Path
import nemo_exaone.checkpoint.hf_to_mcore as hf_to_mcore
from nemo_exaone.cli import main

release, real = Path(sys.argv[1]), hf_to_mcore.chunk_of

def chunk_of(full, chunk):
    while not release.exists():
        time.sleep(0.02)
    return real(full, chunk)

hf_to_mcore.chunk_of = chunk_of
sys.exit(main(sys.argv[2:]))
"""


def test_two_conversions_to_one_output_publish_one_complete_checkpoint(tiny, tmp_path):
    """The reproduction from issue 8: a second run to the same --out while the first is
    writing. Before, it took over the first run's temporary directory; now it is refused,
    naming the first, and the first publishes a checkpoint that holds every shard."""
    from nemo_exaone.checkpoint.verify import verify_dist_checkpoint

    hf, _ = tiny
    out, release = tmp_path / "mcore", tmp_path / "release"
    args = ["convert", "hf-to-mcore", "--hf", str(hf), "--out", str(out), "--quiet"]
    first = subprocess.Popen([sys.executable, "-c", HELD_WRITER, str(release), *args],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        # the first run holds the lock and has begun writing (into a hidden directory)
        while not [d for d in out.parent.glob(f".{out.name}.*") if d.is_dir()]:
            assert first.poll() is None, first.stderr.read()
            assert time.monotonic() < deadline
            time.sleep(0.02)
        second = _cli(*args[1:])
        assert second.returncode == 2, second.stderr
        assert f"is being written by pid {first.pid} on host" in second.stderr
    finally:
        release.touch()
        assert first.wait(timeout=300) == 0, first.stderr.read()
        first.stderr.close()
    assert len(verify_dist_checkpoint(out)) > 10
    assert not _temporaries(out) and not (tmp_path / ".mcore.lock").exists()


def test_hf_export_missing_a_shard_is_never_published(tiny, tmp_path, monkeypatch):
    import nemo_exaone.checkpoint.mcore_to_hf as mcore_to_hf

    _, mcore = tiny
    real = mcore_to_hf.ShardedSafetensorsWriter.close

    def lose_a_shard(self):
        real(self)
        (self.directory / self.files[1]).unlink()

    monkeypatch.setattr(mcore_to_hf.ShardedSafetensorsWriter, "close", lose_a_shard)
    out = tmp_path / "hf"
    with pytest.raises(FileNotFoundError, match=r"names shard 'model-00002-of-\d+\.safetensors'"):
        mcore_to_hf.convert_mcore_to_hf(mcore, out, max_shard_size="200KB", progress=False)
    assert not out.exists() and not _temporaries(out)
