"""The device check's driver (run by scripts/gpu_check.sh): every GPU question in one run of a
few minutes, each phase in its own process under a time limit, results in one JSON file.

Phases, in order:
  env             torch/CUDA/device, megatron-core (a tested version), Transformer Engine or why not
  forward-ref     CPU fp32 log-probs of a fixed batch (CUDA hidden from the process)
  forward         the local spec on the device in bf16, same weights and batch: log-probs
                  compared with forward-ref (max and mean |difference|, KL, top-1 agreement)
  train-ref       CPU fp32 loss curve of a few training steps of the tiny model
  train           the same steps on the device in bf16: every loss within TRAIN_TOL of CPU
  mfu-<shape>     tokens/s, model TFLOP/s and MFU of the training loop with the local spec:
                  EXAONE-3.5-2.4B full depth, the 7.8B shape with 8 layers (bf16; FP8 as well
                  where Transformer Engine imports)
  te              tests/test_gpu.py (TE spec vs local, FP8 vs BF16) where TE imports; otherwise
                  recorded as skipped, with the import error

``--cpu-rehearsal`` runs the same code with the "device" being the CPU (bf16 there too) and
tiny sizes, to prove the driver on a machine without a GPU. Exit status 0 when every phase
passed or was skipped for want of Transformer Engine; a phase that failed, errored, timed out
or did not run (budget spent, its reference failed) fails the check.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Tolerances, bf16 on the device against fp32 on the CPU. Calibration (CPU bf16 vs CPU fp32,
# tiny preset, weights std 0.05): forward max |d logp| 0.024, mean 0.0029, KL 7e-6 nats, with
# log-probs spread (std) 0.40; training losses (10 steps, lr 3e-3) within 0.0021 while the
# loss falls ~0.1. A run that does not learn, or a wrong mask/RoPE/norm, is far outside these.
FORWARD_MAX_TOL = 0.1
FORWARD_MEAN_TOL = 0.01
FORWARD_KL_TOL = 1e-4
FORWARD_WEIGHT_SCALE = 2.5  # x the 0.02 initialiser std: log-probs spread enough to compare
TRAIN_TOL = 0.02
TRAIN_MIN_DROP = 3 * TRAIN_TOL  # the CPU curve must fall this much, or the check is void


# ---------------------------------------------------------------------------- phase bodies
def _device(rehearsal: bool) -> str:
    return "cpu" if rehearsal else "cuda"


def phase_env(args) -> dict:
    import torch

    import nemo_exaone
    from nemo_exaone.runtime.versions import check_megatron_core_version

    info = {"python": platform.python_version(), "torch": torch.__version__,
            "cuda_available": torch.cuda.is_available(), "torch_cuda": torch.version.cuda,
            "nemo_exaone": nemo_exaone.__file__,
            "megatron_core": check_megatron_core_version(), "cpu_count": os.cpu_count()}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(device=torch.cuda.get_device_name(0), capability=list(
            torch.cuda.get_device_capability(0)), memory_gib=round(props.total_memory / 2**30, 1))
    elif not args.cpu_rehearsal:
        raise RuntimeError("no CUDA device visible to torch; run with --cpu-rehearsal on a CPU")
    try:
        import transformer_engine
        import transformer_engine.pytorch  # noqa: F401

        info["transformer_engine"] = transformer_engine.__version__
        info["transformer_engine_available"] = torch.cuda.is_available()
    except Exception as exc:  # noqa: BLE001 - any import failure means "not usable here"
        info["transformer_engine"] = f"not importable: {type(exc).__name__}: {exc}"
        info["transformer_engine_available"] = False
    return {"passed": True, **info}


def _forward_logprobs(device: str, dtype: str):
    """Log-probs of a fixed batch under the local spec, deterministic weights (std 0.05)."""
    import torch

    from nemo_exaone.config.parallel import ParallelConfig, PrecisionConfig
    from nemo_exaone.config.presets import get_preset
    from nemo_exaone.model.builder import ModelOptions, build_model
    from nemo_exaone.model.sharding import load_full_state_dict
    from nemo_exaone.runtime.distributed import destroy_distributed, init_distributed
    from nemo_exaone.training.parity import deterministic_full_state_dict

    init_distributed(ParallelConfig(), seed=1)
    try:
        arch = get_preset("tiny")
        model = build_model(arch, precision=PrecisionConfig(dtype=dtype),
                            options=ModelOptions(spec="local"))
        state = deterministic_full_state_dict(model, seed=1)
        load_full_state_dict(model, {k: v if v.ndim == 1 else v * FORWARD_WEIGHT_SCALE
                                     for k, v in state.items()})
        placed = {str(p.device) for p in model.parameters()}
        model.eval()
        gen = torch.Generator().manual_seed(0)
        tokens = torch.randint(0, arch.vocab_size, (2, 256), generator=gen)
        positions = torch.arange(256).unsqueeze(0).expand(2, -1)
        with torch.no_grad():
            logits = model(tokens.to(device), positions.to(device), None)
        return torch.log_softmax(logits.float(), dim=-1).cpu(), sorted(placed)
    finally:
        destroy_distributed()


def phase_forward_ref(args) -> dict:
    import torch

    logp, placed = _forward_logprobs("cpu", "fp32")
    torch.save(logp, Path(args.workdir) / "forward_ref.pt")
    return {"passed": True, "dtype": "fp32", "params_on": placed,
            "logp_std": logp.std().item(), "shape": list(logp.shape)}


def phase_forward(args) -> dict:
    import torch

    ref = torch.load(Path(args.workdir) / "forward_ref.pt")
    dev, placed = _forward_logprobs(_device(args.cpu_rehearsal), "bf16")
    diff = (dev - ref).abs()
    kl = (ref.exp() * (ref - dev)).sum(-1)
    top2 = ref.topk(2, dim=-1).values
    clear = (top2[..., 0] - top2[..., 1]) > 2 * FORWARD_MAX_TOL  # no near-tie at top-1
    agree = ref.argmax(-1) == dev.argmax(-1)
    out = {"dtype": "bf16", "reference": "cpu fp32", "params_on": placed,
           "logp_std": ref.std().item(), "max_abs_diff": diff.max().item(),
           "mean_abs_diff": diff.mean().item(), "kl_mean": kl.mean().item(),
           "top1_agreement": agree.float().mean().item(),
           "top1_agreement_clear_positions": agree[clear].float().mean().item()
           if clear.any() else None, "clear_positions": int(clear.sum()),
           "tolerance": {"max_abs_diff": FORWARD_MAX_TOL, "mean_abs_diff": FORWARD_MEAN_TOL,
                         "kl_mean": FORWARD_KL_TOL}}
    out["passed"] = (out["max_abs_diff"] <= FORWARD_MAX_TOL
                     and out["mean_abs_diff"] <= FORWARD_MEAN_TOL
                     and out["kl_mean"] <= FORWARD_KL_TOL
                     and (not clear.any() or bool(agree[clear].all())))
    return out


def _train_losses(dtype: str, steps: int) -> tuple[list[float], str]:
    from nemo_exaone.config.parallel import PrecisionConfig
    from nemo_exaone.model.spec import default_spec_name
    from nemo_exaone.training.parity import ParityConfig, run_parity_training

    cfg = ParityConfig(precision=PrecisionConfig(dtype=dtype), steps=steps, micro_batch_size=4,
                       num_microbatches=2, seq_length=128)
    return [m["loss"] for m in run_parity_training(cfg)], default_spec_name()


def phase_train_ref(args) -> dict:
    losses, spec = _train_losses("fp32", args.train_steps)
    Path(args.workdir, "train_ref.json").write_text(json.dumps(losses))
    drop = losses[0] - min(losses[len(losses) // 2:])
    return {"passed": drop >= TRAIN_MIN_DROP or args.cpu_rehearsal, "losses": losses,
            "spec": spec, "drop": drop, "min_drop": TRAIN_MIN_DROP}


def phase_train(args) -> dict:
    ref = json.loads(Path(args.workdir, "train_ref.json").read_text())
    losses, spec = _train_losses("bf16", args.train_steps)
    diffs = [abs(a - b) for a, b in zip(losses, ref)]
    return {"passed": len(losses) == len(ref) and max(diffs) <= TRAIN_TOL, "dtype": "bf16",
            "reference": "cpu fp32", "spec": spec, "losses": losses, "reference_losses": ref,
            "max_abs_diff": max(diffs), "tolerance": TRAIN_TOL}


MFU_SHAPES = {  # name: (preset, arch overrides)
    "exaone3.5-2.4b": ("exaone3.5-2.4b", {}),
    "exaone3.5-7.8b-8layers": ("exaone3.5-7.8b", {"num_layers": 8}),
}
REHEARSAL_SHAPE = ("tiny", {})


def _loop_step_times(preset: str, arch: dict, precision: str, args) -> list[float]:
    """Step times of the project's training loop (synthetic data, local spec, no checkpoint),
    as benchmarks/train_throughput.py measures it."""
    from nemo_exaone.training.config import TrainingJobConfig
    from nemo_exaone.training.loop import train

    cfg = TrainingJobConfig()
    cfg.model.preset, cfg.model.arch, cfg.model.spec = preset, dict(arch), "local"
    cfg.precision.dtype = "bf16"
    cfg.precision.fp8 = precision == "fp8"
    cfg.data.source = "synthetic"
    cfg.train.seq_length = args.mfu_seq_length
    cfg.train.micro_batch_size = args.mfu_micro_batch_size
    cfg.train.global_batch_size = args.mfu_micro_batch_size * args.mfu_num_microbatches
    cfg.train.max_steps = args.mfu_warmup + args.mfu_steps
    cfg.schedule.warmup_steps = 1
    cfg.checkpoint.save_at_end = False
    cfg.checkpoint.resume = False
    cfg.logging.progress = "none"
    cfg.logging.tensorboard = False
    with tempfile.TemporaryDirectory(prefix="nemo_exaone_gpu_check_") as run_dir:
        cfg.run.dir = run_dir
        metrics = train(cfg).metrics
    return [m["step_time_s"] for m in metrics[args.mfu_warmup:]]


def phase_mfu(args) -> dict:
    import torch

    from nemo_exaone.config.presets import get_preset
    from nemo_exaone.training.flops import training_flops_per_token
    from nemo_exaone.training.peak_flops import gpu_peak_tflops

    preset, arch_overrides = (REHEARSAL_SHAPE if args.cpu_rehearsal
                              else MFU_SHAPES[args.shape])
    arch = get_preset(preset).replace(**arch_overrides)
    flops = training_flops_per_token(arch, args.mfu_seq_length)
    tokens = args.mfu_seq_length * args.mfu_micro_batch_size * args.mfu_num_microbatches
    name = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    rows = []
    for precision in args.precisions.split(","):
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        times = _loop_step_times(preset, arch_overrides, precision, args)
        median = statistics.median(times)
        tflops = tokens / median * flops / 1e12
        peak = gpu_peak_tflops(name, "bf16", fp8=precision == "fp8")
        rows.append({"precision": precision, "median_step_s": median, "min_step_s": min(times),
                     "max_step_s": max(times), "tokens_per_s": tokens / median,
                     "model_tflops_per_gpu": tflops,
                     "mfu_vs_bf16_peak": tflops / gpu_peak_tflops(name, "bf16")
                     if gpu_peak_tflops(name, "bf16") else None,
                     "mfu_vs_own_peak": tflops / peak if peak else None,
                     "max_memory_gib": torch.cuda.max_memory_allocated() / 2**30
                     if torch.cuda.is_available() else None})
    return {"passed": True, "device": name, "spec": "local", "preset": preset,
            "arch_overrides": arch_overrides, "num_layers": arch.num_layers,
            "seq_length": args.mfu_seq_length, "tokens_per_step": tokens,
            "steps_timed": args.mfu_steps, "warmup_steps": args.mfu_warmup,
            "flops_per_token": flops, "rows": rows}


PHASES = {"env": phase_env, "forward-ref": phase_forward_ref, "forward": phase_forward,
          "train-ref": phase_train_ref, "train": phase_train, "mfu": phase_mfu}


# ---------------------------------------------------------------------------- orchestration
class Check:
    """Runs the phases in child processes and keeps the JSON file current after each."""

    def __init__(self, args) -> None:
        self.args = args
        self.out = Path(args.out)
        self.deadline = time.monotonic() + args.budget_s
        self.report = {"check": "gpu_check", "mode": "cpu-rehearsal" if args.cpu_rehearsal
                       else "cuda", "started": datetime.now(timezone.utc).isoformat(),
                       "host": platform.node(), "budget_s": args.budget_s,
                       "finished": False, "phases": []}
        self.save()

    def save(self) -> None:
        from nemo_exaone.runtime.outputs import write_text_atomic

        self.out.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.out, json.dumps(self.report, indent=1) + "\n")

    def record(self, name: str, status: str, seconds: float, **extra) -> dict:
        entry = {"phase": name, "status": status, "seconds": round(seconds, 1), **extra}
        self.report["phases"].append(entry)
        self.save()
        shown = {k: v for k, v in extra.get("result", {}).items()
                 if not isinstance(v, list | dict)}
        print(f"[gpu-check] {name}: {status.upper()} in {seconds:.0f}s "
              f"{json.dumps(shown) if shown else extra.get('reason', '')}", flush=True)
        if extra.get("stderr_tail"):
            print(extra["stderr_tail"][-1500:], flush=True)
        return entry

    def run(self, name: str, limit: float, *extra_args: str, cpu_only: bool = False,
            phase: str | None = None) -> dict:
        left = self.deadline - time.monotonic()
        if left < min(limit, 30):
            return self.record(name, "not_run", 0.0, reason=f"budget: {left:.0f}s left")
        result_path = Path(self.args.workdir) / f"{name}.result.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--phase", phase or name,
               "--result", str(result_path), *self.common_args(), *extra_args]
        env = dict(os.environ)
        if cpu_only:
            env["CUDA_VISIBLE_DEVICES"] = ""
        start = time.monotonic()
        timeout = min(limit, left)
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            tail = (exc.stderr or b"")[-3000:]
            return self.record(name, "timeout", time.monotonic() - start, limit_s=round(timeout),
                               stderr_tail=tail.decode(errors="replace")
                               if isinstance(tail, bytes) else tail)
        seconds = time.monotonic() - start
        if proc.returncode != 0 or not result_path.exists():
            return self.record(name, "error", seconds, returncode=proc.returncode,
                               stderr_tail=proc.stderr[-3000:])
        result = json.loads(result_path.read_text())
        return self.record(name, "passed" if result.get("passed") else "failed", seconds,
                           result=result)

    def common_args(self) -> list[str]:
        a = self.args
        out = ["--workdir", a.workdir, "--train-steps", str(a.train_steps),
               "--mfu-seq-length", str(a.mfu_seq_length),
               "--mfu-micro-batch-size", str(a.mfu_micro_batch_size),
               "--mfu-num-microbatches", str(a.mfu_num_microbatches),
               "--mfu-steps", str(a.mfu_steps), "--mfu-warmup", str(a.mfu_warmup)]
        return out + (["--cpu-rehearsal"] if a.cpu_rehearsal else [])

    def te_tests(self, env: dict) -> dict:
        if not env.get("result", {}).get("transformer_engine_available"):
            reason = ("Transformer Engine is not usable here ("
                      f"{env.get('result', {}).get('transformer_engine', 'env phase failed')}):"
                      " TE spec vs local spec and FP8 vs BF16 are NOT tested")
            entry = self.record("te", "skipped", 0.0, reason=reason)
            if self.args.cpu_rehearsal:  # prove at least that the tests collect
                proc = subprocess.run(
                    [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--collect-only",
                     "-q", "-m", "gpu", str(ROOT / "tests" / "test_gpu.py")],
                    capture_output=True, text=True, cwd=ROOT, timeout=300)
                entry["collect_only"] = proc.stdout.strip().splitlines()[-1:]
                self.save()
            return entry
        left = self.deadline - time.monotonic()
        start = time.monotonic()
        log = self.out.parent / "gpu_check_te_pytest.log"
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-m", "gpu", "-v",
                 str(ROOT / "tests" / "test_gpu.py")], capture_output=True, text=True,
                cwd=ROOT, timeout=max(left, 1))
        except subprocess.TimeoutExpired:
            return self.record("te", "timeout", time.monotonic() - start, limit_s=round(left))
        log.write_text(proc.stdout + proc.stderr)
        summary = (proc.stdout.strip().splitlines() or [""])[-1]
        return self.record("te", "passed" if proc.returncode == 0 else "failed",
                           time.monotonic() - start, result={"summary": summary,
                                                             "log": log.name})

    def main(self) -> int:
        env = self.run("env", 120)
        ref = self.run("forward-ref", 180, cpu_only=True)
        if ref["status"] == "passed":
            self.run("forward", 180)
        else:
            self.record("forward", "not_run", 0.0, reason="forward-ref did not pass")
        ref = self.run("train-ref", 240, cpu_only=True)
        if ref["status"] == "passed":
            self.run("train", 240)
        else:
            self.record("train", "not_run", 0.0, reason="train-ref did not pass")
        te = bool(env.get("result", {}).get("transformer_engine_available"))
        precisions = "bf16,fp8" if te else "bf16"
        shapes = ["rehearsal-tiny"] if self.args.cpu_rehearsal else list(MFU_SHAPES)
        for shape in shapes:
            self.run(f"mfu-{shape}", self.args.mfu_limit_s, "--shape", shape,
                     "--precisions", precisions, phase="mfu")
        self.te_tests(env)
        self.report["finished"] = True
        bad = [p["phase"] for p in self.report["phases"]
               if p["status"] in ("failed", "error", "timeout", "not_run")]
        self.report["summary"] = {"failed": bad, "skipped": [
            p["phase"] for p in self.report["phases"] if p["status"] == "skipped"]}
        self.save()
        print(markdown(self.report), flush=True)
        print(f"[gpu-check] {'FAILED: ' + ', '.join(bad) if bad else 'all phases passed'}"
              f" (skipped: {', '.join(self.report['summary']['skipped']) or 'none'});"
              f" results in {self.out}", flush=True)
        return 1 if bad else 0


def markdown(report: dict) -> str:
    """The figures of a results file as Markdown, for benchmarks/RESULTS.md."""
    phases = {p["phase"]: p for p in report["phases"]}
    env = phases.get("env", {}).get("result", {})
    device = env.get("device") or ("CPU" if report["mode"] == "cpu-rehearsal" else "?")
    lines = [f"GPU check ({report['mode']}, {report['started'][:10]}): {device}, "
             f"torch {env.get('torch', '?')}, megatron-core {env.get('megatron_core', '?')}, "
             f"Transformer Engine: {env.get('transformer_engine', '?')}", "",
             "| phase | status | s | figures |", "|---|---|---|---|"]
    for p in report["phases"]:
        r = p.get("result", {})
        if p["phase"] == "forward" and r:
            fig = (f"max/mean abs d logp {r['max_abs_diff']:.4f}/{r['mean_abs_diff']:.5f} "
                   f"(tol {FORWARD_MAX_TOL}/{FORWARD_MEAN_TOL}), KL {r['kl_mean']:.2e}, "
                   f"top-1 {r['top1_agreement']:.3f}")
        elif p["phase"] == "train" and r:
            fig = f"max abs d loss {r['max_abs_diff']:.4f} (tol {r['tolerance']})"
        elif p["phase"].startswith("mfu") and r:
            fig = "; ".join(
                f"{row['precision']}: {row['tokens_per_s']:.0f} tok/s, "
                f"{row['model_tflops_per_gpu']:.1f} TFLOP/s"
                + (f", MFU {100 * row['mfu_vs_bf16_peak']:.1f}%" if row["mfu_vs_bf16_peak"]
                   else "")
                + (f", {row['max_memory_gib']:.1f} GiB" if row["max_memory_gib"] else "")
                for row in r["rows"])
        else:
            fig = p.get("reason") or r.get("summary", "") or (p.get("stderr_tail") or "")[-120:]
        lines.append(f"| {p['phase']} | {p['status']} | {p['seconds']:.0f} | "
                     f"{str(fig).replace('|', '/').strip()} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/gpu_check/gpu_check.json")
    parser.add_argument("--cpu-rehearsal", action="store_true")
    parser.add_argument("--markdown", metavar="JSON",
                        help="print the figures of a results file as Markdown and exit")
    parser.add_argument("--budget-s", type=float, default=450.0,
                        help="wall-clock budget for all phases; later phases are skipped")
    parser.add_argument("--mfu-limit-s", type=float, default=150.0)
    parser.add_argument("--train-steps", type=int, default=10)
    parser.add_argument("--mfu-seq-length", type=int, default=4096)
    parser.add_argument("--mfu-micro-batch-size", type=int, default=1)
    parser.add_argument("--mfu-num-microbatches", type=int, default=4)
    parser.add_argument("--mfu-steps", type=int, default=8)
    parser.add_argument("--mfu-warmup", type=int, default=3)
    # one phase in this process (used by the orchestrator)
    parser.add_argument("--phase", choices=sorted(PHASES), help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--shape", default="exaone3.5-2.4b", help=argparse.SUPPRESS)
    parser.add_argument("--precisions", default="bf16", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.cpu_rehearsal and "--train-steps" not in (argv or sys.argv):
        args.train_steps = 4
    if args.cpu_rehearsal and "--mfu-seq-length" not in (argv or sys.argv):
        args.mfu_seq_length, args.mfu_steps, args.mfu_warmup = 64, 2, 1
        args.mfu_micro_batch_size, args.mfu_num_microbatches = 2, 2
    return args


def main() -> int:
    args = parse_args()
    if args.markdown:
        print(markdown(json.loads(Path(args.markdown).read_text())))
        return 0
    if args.phase:
        from nemo_exaone.commands.hydra_app import quiet_library_warnings

        quiet_library_warnings()
        result = PHASES[args.phase](args)
        Path(args.result).write_text(json.dumps(result))
        return 0
    with tempfile.TemporaryDirectory(prefix="nemo_exaone_gpu_check_") as workdir:
        args.workdir = workdir
        return Check(args).main()


if __name__ == "__main__":
    sys.exit(main())
