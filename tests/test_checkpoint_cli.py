"""``nemo-exaone convert`` end to end in subprocesses: a kill mid-write leaves nothing that
looks like a checkpoint, a rerun completes, and the export restores the HF checkpoint."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import torch

from nemo_exaone.checkpoint.atomic_dir import partial_path
from nemo_exaone.checkpoint.metadata import read_metadata
from nemo_exaone.checkpoint.safetensors_io import SafetensorsSource
from nemo_exaone.checkpoint.synthetic import write_random_hf_checkpoint
from nemo_exaone.config.presets import get_preset

pytestmark = pytest.mark.slow

# ~300 MB in fp32: big enough that writing it takes a while, so the kill lands mid-write.
ARCH = get_preset("tiny").replace(hidden_size=512, intermediate_size=2048, num_layers=16,
                                  vocab_size=16384, num_attention_heads=8,
                                  num_key_value_heads=4, tie_word_embeddings=False)


def _cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nemo_exaone.cli", "convert", *args],
                          capture_output=True, text=True, timeout=300, **kwargs)


def test_kill_mid_write_then_rerun_then_export(tmp_path):
    hf = write_random_hf_checkpoint(tmp_path / "hf", ARCH, torch.float32, seed=3,
                                    max_shard_bytes=10**8)
    (hf / "tokenizer_config.json").write_text('{"model_max_length": 32768}')
    out = tmp_path / "mcore"
    partial = partial_path(out)

    proc = subprocess.Popen([sys.executable, "-m", "nemo_exaone.cli", "convert", "hf-to-mcore",
                             "--hf", str(hf), "--out", str(out), "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (partial.is_dir() and any(partial.glob("*.distcp"))):
        assert proc.poll() is None, "conversion ended before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    proc.kill()
    proc.wait()
    assert not out.exists()
    assert not (partial / "nemo_exaone.json").exists()
    with pytest.raises(FileNotFoundError, match="not a complete nemo-exaone checkpoint"):
        read_metadata(partial)
    refused = _cli("mcore-to-hf", "--ckpt", str(partial), "--out", str(tmp_path / "x"))
    assert refused.returncode == 2 and "not a complete nemo-exaone checkpoint" in refused.stderr

    done = _cli("hf-to-mcore", "--hf", str(hf), "--out", str(out), "--tp", "2", "--pp", "2",
                "--quiet")
    assert done.returncode == 0, done.stderr
    assert "hf-to-mcore:" in done.stdout and not partial.exists()
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
    result = _cli("hf-to-mcore", "--hf", str(tmp_path), "--out", str(tmp_path / "o"),
                  "--tp", "3", "--preset", "tiny")
    assert result.returncode == 2 and "tensor_model_parallel_size=3" in result.stderr
