"""Resume never strands a run; one writer per run directory; Ctrl-C saves; an all-skipped run
fails. Real training checkpoints written by the CLI, damaged the way disks and copies do."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from nemo_exaone.checkpoint.errors import CheckpointError
from nemo_exaone.checkpoint.locate import (
    clean_temporaries,
    locate_checkpoint,
    newest_intact,
    resolve_checkpoint,
)
from nemo_exaone.training.metrics import read_jsonl

QUICK = ["train.seq_length=64", "train.micro_batch_size=4", "train.global_batch_size=8",
         "logging.log_interval=1", "logging.progress=none", "logging.tensorboard=false", "checkpoint.async_save=false"]


def _train(run_dir: Path, data_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "nemo_exaone.cli", "train", "--config-name", "tiny_cpu",
           *QUICK, f"run.dir={run_dir}", f"data.prepare_dir={data_dir}", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """A run with checkpoints at steps 2 and 4 (``latest`` -> 4), and its data directory."""
    base = tmp_path_factory.mktemp("resume")
    run, data = base / "run", base / "data"
    result = _train(run, data, "train.max_steps=4", "checkpoint.save_interval=2")
    assert result.returncode == 0, result.stderr[-3000:]
    return run, data


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


DAMAGE = {
    "distcp": (lambda c: _truncate(sorted(c.glob("*.distcp"))[0]), "__0_0.distcp"),
    "distcp_missing": (lambda c: sorted(c.glob("*.distcp"))[-1].unlink(), ".distcp is missing"),
    "metadata": (lambda c: _truncate(c / ".metadata"), ".metadata"),
    "common": (lambda c: _truncate(c / "common.pt"), "common.pt"),
    "common_garbled": (lambda c: (c / "common.pt").write_bytes(b"x" * 4096), "common.pt"),
    "training_json": (lambda c: _truncate(c / "nemo_exaone_training.json"),
                      "nemo_exaone_training.json"),
    "megatron_json": (lambda c: _truncate(c / "metadata.json"), "metadata.json"),
    "nemo_exaone_json": (lambda c: _truncate(c / "nemo_exaone.json"), "nemo_exaone.json"),
    "latest": (lambda c: (c.parent / "latest").write_bytes(b"iter_00\x00"), "latest"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_latest_checkpoint_names_the_file_and_falls_back(trained, tmp_path, damage):
    root = tmp_path / "checkpoints"
    shutil.copytree(trained[0] / "checkpoints", root)
    spoil, named = DAMAGE[damage]
    if damage.startswith("common") and not (root / "iter_0000004" / "common.pt").exists():
        pytest.skip("megatron-core >= 0.19 keeps the common state inside DCP (no common.pt): "
                    "the .distcp cases cover it")
    assert newest_intact(root).path.name == "iter_0000004" and not newest_intact(root).skipped
    spoil(root / "iter_0000004")
    found = newest_intact(root)
    # A garbled pointer: the newest intact checkpoint is still the one it named.
    assert found.path.name == ("iter_0000004" if damage == "latest" else "iter_0000002")
    assert len(found.skipped) == 1 and named in found.skipped[0]
    with pytest.raises(CheckpointError, match="checkpoint.fallback=true") as refused:
        newest_intact(root, fallback=False)
    assert named in str(refused.value)
    # A run directory given to a loader resolves to the same intact checkpoint, and says so.
    located = locate_checkpoint(tmp_path)
    assert located.path == found.path and "skipped damaged" in located.note


def test_resume_falls_back_with_a_warning_or_stops_when_asked(trained, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(trained[0], run_dir)
    _truncate(sorted((run_dir / "checkpoints" / "iter_0000004").glob("*.distcp"))[0])
    stop = _train(run_dir, trained[1], "train.max_steps=5", "checkpoint.fallback=false")
    assert stop.returncode == 2, stop.stderr[-3000:]
    assert "__0_0.distcp" in stop.stderr and "Traceback" not in stop.stderr
    resumed = _train(run_dir, trained[1], "train.max_steps=5")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "newest intact checkpoint" in resumed.stderr and "__0_0.distcp" in resumed.stderr
    events = read_jsonl(run_dir / "events.jsonl")
    fallback = next(e for e in events if e["event"] == "checkpoint_fallback")
    assert fallback["path"].endswith("iter_0000002")
    assert [e["step"] for e in events if e["event"] == "resume"] == [2]
    assert [r["step"] for r in read_jsonl(run_dir / "metrics.jsonl")] == [1, 2, 3, 4, 5]
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == "iter_0000005"


def test_a_second_training_on_the_run_directory_is_refused_naming_the_holder(trained, tmp_path):
    from nemo_exaone.runtime.outputs import output_lock

    run_dir = tmp_path / "run"
    shutil.copytree(trained[0], run_dir)
    config_before = (run_dir / "config.yaml").read_text()
    with output_lock(run_dir, inside=True):
        result = _train(run_dir, trained[1], "train.max_steps=6")
    assert result.returncode == 2, result.stderr[-3000:]
    assert f"pid {os.getpid()}" in result.stderr and "Traceback" not in result.stderr
    assert (run_dir / "config.yaml").read_text() == config_before  # nothing written
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == "iter_0000004"


def test_every_step_skipped_fails_naming_the_policy_limit(trained, tmp_path):
    result = _train(tmp_path / "run", trained[1], "train.max_steps=2",
                    "safety.inject_nan_at_steps=[1,2]")
    assert result.returncode == 3, result.stderr[-3000:]
    assert "safety.max_consecutive_skips=10" in result.stderr
    assert "every one of the 2 steps" in result.stderr
    assert not (tmp_path / "run" / "checkpoints" / "latest").exists()


def test_ctrl_c_stops_after_saving_and_a_second_ctrl_c_aborts():
    from nemo_exaone.training.loop import _StopFlag

    previous = signal.getsignal(signal.SIGINT)
    flag = _StopFlag()
    try:
        os.kill(os.getpid(), signal.SIGINT)
        assert flag.raised and flag.signal_name == "SIGINT"
        with pytest.raises(KeyboardInterrupt, match="without saving"):
            os.kill(os.getpid(), signal.SIGINT)
    finally:
        flag.restore()
    assert signal.getsignal(signal.SIGINT) is previous


def test_paths_a_user_would_pass_resolve_to_the_same_checkpoint(trained):
    run = trained[0]
    newest = run / "checkpoints" / "iter_0000004"
    for given, says in ((run, "run directory"), (run / "checkpoints", "checkpoint folder"),
                        (newest, None)):
        located = locate_checkpoint(given)
        assert located.path == newest and str(newest) in located.note
        assert says is None or says in located.note
    older = run / "checkpoints" / "iter_0000002"
    assert resolve_checkpoint(older) == older
    with pytest.raises(FileNotFoundError, match="holds no checkpoint"):
        locate_checkpoint(run.parent / "data")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        locate_checkpoint(run / "nothing")


def test_stale_checkpoint_temporaries_are_removed_but_not_this_process(tmp_path):
    stale = tmp_path / ".iter_0000004.tmp-999999999-abcd1234"
    legacy = tmp_path / ".iter_0000002.tmp"
    pointer = tmp_path / ".latest.tmp-999999999-abcd1234"
    mine = tmp_path / f".iter_0000006.tmp-{os.getpid()}-abcd1234"
    for directory in (stale, legacy, mine):
        directory.mkdir()
    pointer.write_text("iter_0000004\n")
    assert sorted(p.name for p in clean_temporaries(tmp_path)) == sorted(
        p.name for p in (stale, legacy, pointer))
    assert [p.name for p in tmp_path.iterdir()] == [mine.name]


def test_export_takes_a_run_directory_and_says_which_checkpoint(trained, tmp_path):
    run = trained[0]
    result = subprocess.run([sys.executable, "-m", "nemo_exaone.cli", "convert", "mcore-to-hf",
                             "--ckpt", str(run), "--out", str(tmp_path / "hf"), "--quiet"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    newest = run / "checkpoints" / "iter_0000004"
    assert f"using checkpoint {newest} (the latest intact checkpoint of run directory" \
        in result.stdout
    assert (tmp_path / "hf" / "config.json").is_file()


def test_resumed_run_keeps_carrying_the_identity_after_pruning_its_origin(trained, tmp_path):
    """The HF identity (tokenizer...) comes from the checkpoint a run resumed from; pruning
    that checkpoint (keep_last) must not break the saves after it."""
    run_dir = tmp_path / "run"
    shutil.copytree(trained[0], run_dir)
    result = _train(run_dir, trained[1], "train.max_steps=8", "checkpoint.save_interval=2",
                    "checkpoint.keep_last=1")
    assert result.returncode == 0, result.stderr[-3000:]
    root = run_dir / "checkpoints"
    assert sorted(p.name for p in root.glob("iter_*")) == ["iter_0000008"]
    assert (root / "iter_0000008" / "hf_identity" / "tokenizer.json").is_file()
