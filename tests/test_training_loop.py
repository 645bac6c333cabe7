"""The training loop end to end on CPU: real Megatron-Core, the shipped corpus, real processes.

Kill-and-resume and SIGTERM run ``examples/pretrain.py`` as a subprocess and compare its
``metrics.jsonl`` with an uninterrupted run; layouts and stages run in spawned processes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from nemo_exaone.commands.hydra_app import job_config, register_configs
from nemo_exaone.runtime.launch import spawn_local
from nemo_exaone.training.metrics import read_jsonl

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "examples" / "pretrain.py"
# Small and quick: 8 x 64 tokens per step.
QUICK = ["train.seq_length=64", "train.micro_batch_size=4", "train.global_batch_size=8",
         "logging.log_interval=1", "logging.progress=none", "logging.tensorboard=false",
         "schedule.warmup_steps=2"]


@pytest.fixture(scope="module")
def prepare_dir(tmp_path_factory) -> str:
    """One prepared copy of the shipped corpus for every run of this module."""
    return str(tmp_path_factory.mktemp("shipped_data"))


def compose_job(name: str, overrides: list[str]):
    GlobalHydra.instance().clear()
    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "nemo_exaone" / "conf"), version_base="1.3"):
        return job_config(compose(config_name=name, overrides=overrides))


def _train(cfg) -> list[dict]:
    from nemo_exaone.training.loop import train

    return train(cfg).metrics


def _script(run_dir: Path, prepare_dir: str, steps: int, *extra: str) -> list[str]:
    return [sys.executable, str(SCRIPT), "--config-name", "tiny_cpu", *QUICK,
            f"run.dir={run_dir}", f"data.prepare_dir={prepare_dir}",
            f"train.max_steps={steps}", "checkpoint.save_interval=4", *extra]


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _start_and_signal(cmd: list[str], run_dir: Path, at_step: int, sig: int
                      ) -> subprocess.Popen:
    """Start ``cmd`` in its own process group and, once ``metrics.jsonl`` reaches
    ``at_step``, send ``sig`` to the whole group, as a scheduler does (SLURM signals every
    process of a job, including dist_checkpointing's helper processes)."""
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            records = read_jsonl(run_dir / "metrics.jsonl")
            if records and records[-1]["step"] >= at_step:
                os.killpg(proc.pid, sig)
                break
            time.sleep(0.01)
        proc.wait(timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # leave no helper process behind
    return proc


def _losses(run_dir: Path) -> dict[int, tuple]:
    return {r["step"]: (r["loss"], r["grad_norm"], r["lr"])
            for r in read_jsonl(run_dir / "metrics.jsonl")}


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, prepare_dir) -> Path:
    run_dir = tmp_path_factory.mktemp("reference")
    _run(_script(run_dir, prepare_dir, 24))
    return run_dir


def test_loss_decreases_on_the_shipped_corpus(reference_run):
    losses = [loss for loss, _, _ in _losses(reference_run).values()]
    assert len(losses) == 24
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4 - 0.5
    config = (reference_run / "config.yaml").read_text()
    assert "max_steps: 24" in config and "shipped_split: pretrain" in config
    events = read_jsonl(reference_run / "events.jsonl")
    data = next(e for e in events if e["event"] == "data")
    assert data["prefixes"][0].endswith("/pretrain") and data["tokenizer_dir"]


def test_sigterm_and_sigkill_then_resume_are_bit_identical(tmp_path, prepare_dir,
                                                            reference_run):
    """SIGTERM saves and exits 0; SIGKILL loses the steps since the last checkpoint; each
    time the same command resumes, and the finished run equals an uninterrupted one."""
    run_dir = tmp_path / "interrupted"
    cmd = _script(run_dir, prepare_dir, 24)
    proc = _start_and_signal(cmd, run_dir, at_step=3, sig=signal.SIGTERM)
    assert proc.returncode == 0, proc.stderr.read()[-2000:]
    stop = next(e for e in read_jsonl(run_dir / "events.jsonl") if e["event"] == "sigterm")
    assert stop["checkpoint"].endswith(f"iter_{stop['step']:07d}") and stop["step"] < 24
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == f"iter_{stop['step']:07d}"

    proc = _start_and_signal(cmd, run_dir, at_step=stop["step"] + 6, sig=signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    killed_at = read_jsonl(run_dir / "metrics.jsonl")[-1]["step"]
    assert killed_at < 24, "the run finished before it could be killed"
    _run(cmd)
    assert _losses(run_dir) == _losses(reference_run)  # loss, grad norm and lr: exact
    resumes = [e["step"] for e in read_jsonl(run_dir / "events.jsonl") if e["event"] == "resume"]
    assert resumes[0] == stop["step"] and resumes[1] <= killed_at
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == "iter_0000024"
    assert not list((run_dir / "checkpoints").glob(".*tmp*"))


def _checkpoint_copy(src_run: Path, step: int, dst_run: Path) -> None:
    name = f"iter_{step:07d}"
    (dst_run / "checkpoints").mkdir(parents=True)
    shutil.copytree(src_run / "checkpoints" / name, dst_run / "checkpoints" / name)
    (dst_run / "checkpoints" / "latest").write_text(name + "\n")


def _train_each(*configs) -> list[list[dict]]:
    """Several runs in one process group (starting processes is the slow part on CPU)."""
    import torch

    torch.distributed.init_process_group("gloo")
    try:
        return [_train(cfg) for cfg in configs]
    finally:
        torch.distributed.destroy_process_group()


def test_resume_at_another_parallel_layout(tmp_path, prepare_dir):
    """TP=2 -> PP=2 and -> one process; distributed optimizer DP=2 -> DP=1 and -> PP=2."""
    common = QUICK + [f"data.prepare_dir={prepare_dir}", "train.max_steps=6",
                      "checkpoint.save_interval=3"]

    def job(name: str, *layout: str):
        return compose_job("tiny_cpu", common + [*layout, f"run.dir={tmp_path / name}"])

    tp2, dp2 = spawn_local(_train_each, 2, job("tp2", "parallel=tp2"),
                           job("dp2", "parallel=dp_distopt"))[0]
    for src in ("tp2", "dp2"):
        for dst in ("pp2", "one"):
            _checkpoint_copy(tmp_path / src, 3, tmp_path / f"{src}_{dst}")
    pp2 = "parallel.pipeline_model_parallel_size=2"
    distopt = "parallel.use_distributed_optimizer=true"
    on_two = spawn_local(_train_each, 2, job("tp2_pp2", pp2), job("dp2_pp2", pp2, distopt))[0]
    on_one = spawn_local(_train_each, 1, job("tp2_one", "parallel=single"),
                         job("dp2_one", "parallel=dp_distopt"))[0]
    for reference, resumed in ((tp2, on_two[0]), (tp2, on_one[0]), (dp2, on_two[1]),
                               (dp2, on_one[1])):
        assert [r["step"] for r in resumed] == [4, 5, 6]
        for ref, got in zip(reference[3:], resumed):
            assert got["loss"] == pytest.approx(ref["loss"], abs=1e-5)
            assert got["grad_norm"] == pytest.approx(ref["grad_norm"], rel=1e-4)


def _weights_from_converted_checkpoint(path: str) -> dict:
    """The tiny model's weights as our stage loader and as the converter's loader read them."""
    from nemo_exaone.checkpoint.mcore_checkpoint import load_mcore_checkpoint, load_stage_weights
    from nemo_exaone.config.parallel import ParallelConfig
    from nemo_exaone.config.presets import get_preset
    from nemo_exaone.model.builder import build_model
    from nemo_exaone.runtime.distributed import destroy_distributed, init_distributed

    init_distributed(ParallelConfig(), seed=5)
    try:
        ours, theirs = build_model(get_preset("tiny")), build_model(get_preset("tiny"))
        load_stage_weights([ours], Path(path), get_preset("tiny"))
        load_mcore_checkpoint([theirs], path)
        return {"ours": {k: v.clone() for k, v in ours.state_dict().items() if "extra" not in k},
                "theirs": {k: v.clone() for k, v in theirs.state_dict().items()
                           if "extra" not in k}}
    finally:
        destroy_distributed()


def _stage_chain(configs: list, recompute, async_cfg, converted) -> dict:
    """Run the stages in order in one process, stage (a) again with full activation
    recompute, with asynchronous checkpoints (then resumed from the first one), a stage
    from an HF-converted checkpoint, and try a checkpoint of the wrong model."""
    from nemo_exaone.training.loop import train

    out = {"converted_weights": _weights_from_converted_checkpoint(converted.init.checkpoint),
           "converted": train(converted).metrics}
    for cfg in configs:
        out[cfg.run.name] = train(cfg).metrics
    out["recompute"] = train(recompute).metrics
    out["async"] = train(async_cfg).metrics
    root = Path(async_cfg.run.dir) / "checkpoints"
    shutil.rmtree(root / "iter_0000003")
    (root / "latest").write_text("iter_0000002\n")
    out["async_resumed"] = train(async_cfg).metrics
    wrong = configs[-1]
    wrong.stage.objective, wrong.init.checkpoint = "lm", configs[0].run.dir
    wrong.run.dir = wrong.run.dir + "_wrong_arch"
    try:
        train(wrong)
    except ValueError as exc:
        out["refusal"] = str(exc)
    return out


@pytest.fixture(scope="module")
def stages(tmp_path_factory, prepare_dir) -> dict:
    """The four stages chained (a -> b -> c -> d), stage (a) again with full recompute and with
    asynchronous checkpoints, a stage from an HF-converted checkpoint, and a refused init: one
    spawned process for all of them; each test below checks one behaviour."""
    root = tmp_path_factory.mktemp("stages")
    runs = {stage: root / stage for stage in ("a", "b", "c", "d")}
    base = QUICK + [f"data.prepare_dir={prepare_dir}", "train.max_steps=3"]
    configs = [
        compose_job("tiny_cpu", base + [f"run.dir={runs['a']}", "run.name=a"]),
        compose_job("tiny_cpu_continued", base + [
            f"run.dir={runs['b']}", "run.name=b", f"init.checkpoint={runs['a']}",
            "train.seq_length=128", "train.micro_batch_size=2", "train.global_batch_size=4"]),
        compose_job("tiny_cpu_anneal", base + [
            f"run.dir={runs['c']}", "run.name=c", f"init.checkpoint={runs['b']}",
            "schedule.warmup_steps=0"]),
        compose_job("tiny_cpu_distill", base + [
            f"run.dir={runs['d']}", "run.name=d", f"distill.teacher_checkpoint={runs['c']}",
            "distill.loss=afm"]),
    ]
    recompute = compose_job("tiny_cpu", base + [
        f"run.dir={root / 'a_recompute'}", "model.recompute_granularity=full",
        "model.recompute_method=uniform", "model.recompute_num_layers=1"])
    async_cfg = compose_job("tiny_cpu", base + [
        f"run.dir={root / 'a_async'}", "checkpoint.async_save=true",
        "checkpoint.save_interval=2"])
    from nemo_exaone.checkpoint.hf_to_mcore import convert_hf_to_mcore
    from nemo_exaone.checkpoint.synthetic import write_random_hf_checkpoint
    from nemo_exaone.config.presets import get_preset

    write_random_hf_checkpoint(root / "hf", get_preset("tiny"), seed=3)
    convert_hf_to_mcore(root / "hf", root / "converted", progress=False)
    converted = compose_job("tiny_cpu_continued", base + [
        f"run.dir={root / 'from_hf'}", f"init.checkpoint={root / 'converted'}",
        "train.max_steps=2", "train.seq_length=128", "train.micro_batch_size=2",
        "train.global_batch_size=4"])
    [out] = spawn_local(_stage_chain, 1, configs, recompute, async_cfg, converted)
    return {"out": out, "runs": runs}


def _event(run_dir: Path, name: str) -> dict:
    return next(e for e in read_jsonl(run_dir / "events.jsonl") if e["event"] == name)


def test_every_stage_runs_three_finite_steps(stages):
    for name in "abcd":
        assert len(stages["out"][name]) == 3
        assert all(r["loss"] == r["loss"] for r in stages["out"][name])


def test_continued_stage_starts_from_the_pretraining_run(stages):
    run_b = stages["runs"]["b"]
    said = _event(run_b, "init_checkpoint")  # a run directory: which checkpoint, why
    assert said["path"].endswith("iter_0000003") and "run directory" in said["note"]
    assert any("rope_theta" in change for change in _event(run_b, "init_weights")["arch_changes"])
    data_b = _event(run_b, "data")
    assert len(data_b["prefixes"]) == 2 and data_b["weights"][1] == pytest.approx(0.25)


def test_anneal_stage_decays_linearly_to_zero(stages):
    assert [r["lr"] for r in stages["out"]["c"]] == pytest.approx([1e-3, 1e-3 * 2 / 3, 1e-3 / 3])


def test_distill_stage_logs_the_students_plain_cross_entropy(stages):
    assert "loss/lm" in stages["out"]["d"][0]  # beside the AFM loss


def test_init_from_a_checkpoint_of_another_model_is_refused_naming_the_field(stages):
    refusal = stages["out"]["refusal"]
    assert "does not describe init.checkpoint" in refusal and "num_layers" in refusal


def test_full_activation_recompute_gives_the_same_losses(stages):
    out = stages["out"]
    for plain, recomputed in zip(out["a"], out["recompute"], strict=True):
        assert recomputed["loss"] == pytest.approx(plain["loss"], abs=1e-6)


def test_async_checkpoints_train_identically_and_resume(stages):
    out = stages["out"]
    assert [r["loss"] for r in out["a"]] == [r["loss"] for r in out["async"]]
    assert [r["step"] for r in out["async_resumed"]] == [3]
    assert out["async_resumed"][0]["loss"] == out["async"][2]["loss"]


def test_stage_from_an_hf_converted_checkpoint(stages):
    weights = stages["out"]["converted_weights"]
    assert weights["ours"].keys() == weights["theirs"].keys()
    assert all(torch.equal(weights["ours"][k], weights["theirs"][k]) for k in weights["ours"])
    assert len(stages["out"]["converted"]) == 2


def _nan_runs(skip_cfg, stop_cfg) -> dict:
    from nemo_exaone.training.loop import train
    from nemo_exaone.training.safety import NonFiniteTrainingError

    out = {"skip": train(skip_cfg).metrics}
    try:
        train(stop_cfg)
    except NonFiniteTrainingError as exc:
        out["stop"] = str(exc)
    return out


def test_nan_is_caught_skipped_or_stops_keeping_the_last_good_checkpoint(tmp_path, prepare_dir):
    base = QUICK + [f"data.prepare_dir={prepare_dir}", "train.max_steps=6",
                    "safety.inject_nan_at_steps=[3]", "checkpoint.save_interval=2"]
    skip_cfg = compose_job("tiny_cpu", base + [f"run.dir={tmp_path / 'skip'}"])
    stop_cfg = compose_job("tiny_cpu", base + [f"run.dir={tmp_path / 'stop'}",
                                               "safety.on_nonfinite=stop"])
    [out] = spawn_local(_nan_runs, 1, skip_cfg, stop_cfg)
    skip = {r["step"]: r for r in out["skip"]}
    assert skip[3]["skipped"] and skip[3]["loss"] != skip[3]["loss"]  # NaN, counted
    assert skip[6]["skipped_total"] == 1 and not skip[4]["skipped"]
    assert all(skip[s]["loss"] == skip[s]["loss"] for s in (1, 2, 4, 5, 6))
    # no update at step 3, no scheduler step: step 4 uses step 3's learning rate
    assert skip[4]["lr"] == skip[3]["lr"]
    assert "non-finite training step 3" in out["stop"] and "iter_0000002" in out["stop"]
    latest = (tmp_path / "stop" / "checkpoints" / "latest").read_text().strip()
    assert latest == "iter_0000002"
    recorded = read_jsonl(tmp_path / "stop" / "metrics.jsonl")
    assert recorded[-1]["step"] == 3 and recorded[-1]["skipped"]


def test_pretrain_help_lists_the_config_groups():
    result = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True,
                            text=True, cwd=ROOT, timeout=120,
                            env={**os.environ, "HYDRA_FULL_ERROR": "1"})
    assert result.returncode == 0
    for group in ("model:", "parallel:", "precision:", "data:", "optimizer:", "schedule:",
                  "stage:"):
        assert group in result.stdout
    assert "tiny_student" in result.stdout and "tp2" in result.stdout
