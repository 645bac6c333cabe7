"""Training throughput of the project's Megatron-Core loop, against a plain PyTorch baseline.

CPU (default): tokens/s of ``nemo_exaone.training.loop.train`` (the loop every stage runs:
Megatron DDP, optimizer, schedules, checkpoint-free) against a plain PyTorch loop over
transformers' ``LlamaForCausalLM`` of the same shape (EXAONE 3.x is Llama-shaped), same
global batch, micro-batching, AdamW settings, gradient clipping and fp32. Four loops: ours
eager and with ``model.compile`` (each decoder layer compiled), the baseline eager and with
each ``LlamaDecoderLayer`` compiled the same way, so that both ratios can be stated. Every
loop runs in a fresh process with the same number of threads; a round runs all four (in an
order rotated each round), for ``--rounds`` rounds. Compilation happens in the warm-up steps,
which are not timed. Reported per loop: its best round (median step time over the timed
steps, wall clock and process CPU time); per ratio: the median over rounds of the ratio within
a round (paired, so a load swing between rounds cancels) and the best-round ratio. The load
average is recorded. On a machine shared with other jobs, ``--threads 1`` makes the CPU-time
ratio meaningful (one thread's CPU time is its work; wall time is the neighbours' too).

GPU (``--gpu``): model TFLOP/s per GPU and MFU of our loop for EXAONE-3.5-2.4B (full depth)
and the 7.8B shape with fewer layers, in BF16 and FP8 (Transformer Engine), one GPU.
MFU is reported against the BF16 dense peak (the usual convention) and, for FP8 runs, also
against the FP8 peak. ``--gpu-baseline`` adds the transformers baseline (fp32 master weights,
bf16 autocast) for the same shapes.

Prints a table and a final JSON line. Examples::

    python benchmarks/train_throughput.py                 # CPU, ~10 minutes
    python benchmarks/train_throughput.py --gpu           # one GPU
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, replace

from nemo_exaone.runtime.launch import spawn_local


@dataclass
class Shape:
    preset: str
    hidden_size: int | None = None
    num_layers: int | None = None
    num_attention_heads: int | None = None
    num_key_value_heads: int | None = None
    intermediate_size: int | None = None
    vocab_size: int | None = None

    def arch(self):
        from nemo_exaone.training.config import resolve_arch

        overrides = {k: v for k, v in asdict(self).items() if k != "preset" and v is not None}
        return resolve_arch(self.preset, overrides, "shape")


@dataclass
class Run:
    shape: Shape
    seq_length: int
    micro_batch_size: int
    num_microbatches: int
    steps: int
    warmup: int
    dtype: str = "fp32"
    fp8: bool = False
    recompute: str | None = None
    compile: bool = False  # ours: model.compile; baseline: each decoder layer compiled
    threads: int | None = None  # torch threads (None: torch's default)

    @property
    def tokens_per_step(self) -> int:
        return self.seq_length * self.micro_batch_size * self.num_microbatches


def _set_threads(run: Run) -> None:
    import torch

    if run.threads:
        torch.set_num_threads(run.threads)


# ------------------------------------------------------------------ our loop
def ours(run: Run) -> tuple[list[float], list[float]]:
    """Wall and CPU times (s) of the timed steps of the project's training loop."""
    from nemo_exaone.commands.hydra_app import quiet_library_warnings
    from nemo_exaone.training import iteration
    from nemo_exaone.training.config import TrainingJobConfig
    from nemo_exaone.training.loop import train

    _set_threads(run)
    wall, cpu = [], []
    run_iteration = iteration.run_iteration

    def timed_iteration(*args, **kwargs):  # one call per optimizer step
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        out = run_iteration(*args, **kwargs)
        wall.append(time.perf_counter() - start_wall)
        cpu.append(time.process_time() - start_cpu)
        return out

    iteration.run_iteration = timed_iteration

    quiet_library_warnings()
    cfg = TrainingJobConfig()
    overrides = {k: v for k, v in asdict(run.shape).items() if k != "preset" and v is not None}
    cfg.model.preset, cfg.model.arch = run.shape.preset, overrides
    cfg.model.recompute_granularity = run.recompute
    cfg.model.compile = run.compile
    cfg.precision.dtype, cfg.precision.fp8 = run.dtype, run.fp8
    cfg.data.source = "synthetic"
    cfg.train.seq_length = run.seq_length
    cfg.train.micro_batch_size = run.micro_batch_size
    cfg.train.global_batch_size = run.micro_batch_size * run.num_microbatches
    cfg.train.max_steps = run.warmup + run.steps
    cfg.schedule.warmup_steps = 1
    cfg.checkpoint.save_at_end = False
    cfg.checkpoint.resume = False
    cfg.logging.progress = "none"
    cfg.logging.tensorboard = False
    with tempfile.TemporaryDirectory(prefix="nemo_exaone_bench_") as run_dir:
        cfg.run.dir = run_dir
        steps = len(train(cfg).metrics)
    if steps != len(wall):
        raise RuntimeError(f"timed {len(wall)} iterations for {steps} steps")
    return wall[run.warmup:], cpu[run.warmup:]


# ------------------------------------------------------------------ baseline
def baseline(run: Run) -> tuple[list[float], list[float]]:
    """Wall and CPU times (s) of the timed steps of a plain PyTorch loop over transformers'
    LlamaForCausalLM."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from nemo_exaone.training.samples import SyntheticSamples

    _set_threads(run)

    arch = run.shape.arch()
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    config = LlamaConfig(
        vocab_size=arch.vocab_size, hidden_size=arch.hidden_size,
        intermediate_size=arch.intermediate_size, num_hidden_layers=arch.num_layers,
        num_attention_heads=arch.num_attention_heads,
        num_key_value_heads=arch.num_key_value_heads, head_dim=arch.head_dim,
        max_position_embeddings=arch.max_position_embeddings, rope_theta=arch.rope_theta,
        rope_scaling=arch.rope_scaling, rms_norm_eps=arch.layer_norm_epsilon,
        tie_word_embeddings=arch.tie_word_embeddings, attention_bias=False, mlp_bias=False,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(device)  # fp32 weights (master weights on GPU)
    model.train()
    if run.compile:  # the same granularity as ours: each decoder layer, in place
        for layer in model.model.layers:
            layer.compile(dynamic=False)
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=3e-4, betas=(0.9, 0.95), eps=1e-8)
    source = SyntheticSamples(arch.vocab_size, run.seq_length, seed=1234)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda and run.dtype == "bf16")
    times, cpu, consumed = [], [], 0
    for step in range(run.warmup + run.steps):
        if cuda:
            torch.cuda.synchronize()
        start, start_cpu = time.perf_counter(), time.process_time()
        for _ in range(run.num_microbatches):
            rows = [source[consumed + i] for i in range(run.micro_batch_size)]
            consumed += run.micro_batch_size
            tokens = torch.stack([r["tokens"] for r in rows]).to(device)
            labels = torch.stack([r["labels"] for r in rows]).to(device)
            with autocast:
                logits = model(input_ids=tokens).logits
            loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1),
                                                     labels.flatten())
            (loss / run.num_microbatches).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        if step >= run.warmup:
            times.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
    return times, cpu


# ------------------------------------------------------------------ reporting
def _summary(times: tuple[list[float], list[float]], run: Run) -> dict:
    wall, cpu = times
    median = statistics.median(wall)
    return {"median_step_s": median, "tokens_per_s": run.tokens_per_step / median,
            "min_step_s": min(wall), "max_step_s": max(wall),
            "median_cpu_step_s": statistics.median(cpu),
            "tokens_per_cpu_s": run.tokens_per_step / statistics.median(cpu)}


def _best(rounds: list[dict]) -> dict:
    return max(rounds, key=lambda r: r["tokens_per_s"])


LOOPS = {  # name -> (function, compiled)
    "ours": (ours, False),
    "ours compiled": (ours, True),
    "baseline": (baseline, False),
    "baseline compiled": (baseline, True),
}
RATIOS = [("ours compiled", "baseline"), ("ours compiled", "baseline compiled"),
          ("ours", "baseline"), ("ours compiled", "ours")]


def cpu_benchmark(args) -> dict:
    import os

    shape = Shape(preset="tiny", hidden_size=args.hidden, num_layers=args.layers,
                  num_attention_heads=args.heads, num_key_value_heads=args.kv_heads,
                  intermediate_size=args.ffn, vocab_size=args.vocab)
    run = Run(shape=shape, seq_length=args.seq_length, micro_batch_size=args.micro_batch_size,
              num_microbatches=args.num_microbatches, steps=args.steps, warmup=args.warmup,
              threads=args.threads)
    names = [n for n in LOOPS if args.compile or not LOOPS[n][1]]
    rounds: list[dict] = []
    for i in range(args.rounds):
        order = names[i % len(names):] + names[:i % len(names)]
        result = {"order": order, "load_before": os.getloadavg()[0]}
        for name in order:
            fn, compiled = LOOPS[name]
            result[name] = _summary(spawn_local(fn, 1, replace(run, compile=compiled))[0], run)
        result["load_after"] = os.getloadavg()[0]
        rounds.append(result)
        print(f"round {i + 1}: " + ", ".join(
            f"{n} {result[n]['tokens_per_s']:.0f}" for n in names)
            + f" tokens/s; load {result['load_before']:.1f}-{result['load_after']:.1f}",
            flush=True)
    best = {n: _best([r[n] for r in rounds]) for n in names}
    ratios = {}
    for metric in ("tokens_per_s", "tokens_per_cpu_s"):
        for a, b in RATIOS:
            if a in names and b in names:
                paired = [r[a][metric] / r[b][metric] for r in rounds]
                ratios[f"{a} / {b} ({metric})"] = {
                    "median_paired": statistics.median(paired), "min_paired": min(paired),
                    "max_paired": max(paired),
                    "best_rounds": max(r[a][metric] for r in rounds)
                    / max(r[b][metric] for r in rounds)}
    arch = shape.arch()
    import torch

    from nemo_exaone.training.flops import training_flops_per_token

    flops = training_flops_per_token(arch, run.seq_length)
    loads = [r["load_before"] for r in rounds] + [r["load_after"] for r in rounds]
    print(f"shape: {arch.num_layers} layers, hidden {arch.hidden_size}, heads "
          f"{arch.num_attention_heads}/{arch.num_key_value_heads}, ffn {arch.intermediate_size},"
          f" vocab {arch.vocab_size}; batch {run.num_microbatches} x {run.micro_batch_size} x "
          f"{run.seq_length} = {run.tokens_per_step} tokens/step, fp32, CPU, "
          f"{run.threads or torch.get_num_threads()} threads; {args.rounds} rounds, median of "
          f"{run.steps} "
          f"steps after {run.warmup} warm-up; load average {min(loads):.1f}-{max(loads):.1f}")
    print(f"{'loop':34s} {'tokens/s':>10s} {'ms/step':>9s} {'GFLOP/s':>9s} "
          f"{'tokens/cpu-s':>12s}  (best round)")
    for name in names:
        r = best[name]
        print(f"{name:34s} {r['tokens_per_s']:10.0f} {1000 * r['median_step_s']:9.1f} "
              f"{r['tokens_per_s'] * flops / 1e9:9.2f} {r['tokens_per_cpu_s']:12.0f}")
    print(f"{'ratio':56s} {'median paired':>13s} {'range':>13s} {'best rounds':>11s}")
    for key, r in ratios.items():
        print(f"{key:56s} {r['median_paired']:13.3f} "
              f"{r['min_paired']:6.3f}-{r['max_paired']:.3f} {r['best_rounds']:11.3f}")
    return {"benchmark": "train_throughput", "device": "cpu", "shape": asdict(shape),
            "tokens_per_step": run.tokens_per_step,
            "threads": run.threads or torch.get_num_threads(),
            "best": best, "ratios": ratios, "rounds": rounds}


GPU_SHAPES = {
    "exaone3.5-2.4b": Shape(preset="exaone3.5-2.4b"),
    "exaone3.5-7.8b-8layers": Shape(preset="exaone3.5-7.8b", num_layers=8),
}


def gpu_benchmark(args) -> dict:
    import torch

    from nemo_exaone.training.flops import training_flops_per_token
    from nemo_exaone.training.peak_flops import gpu_peak_tflops

    name = torch.cuda.get_device_name()
    bf16_peak = gpu_peak_tflops(name, "bf16") or float("nan")
    fp8_peak = gpu_peak_tflops(name, "bf16", fp8=True) or float("nan")
    rows = []
    for shape_name, shape in GPU_SHAPES.items():
        for precision in args.gpu_precisions.split(","):
            run = Run(shape=shape, seq_length=args.gpu_seq_length,
                      micro_batch_size=args.gpu_micro_batch_size,
                      num_microbatches=args.gpu_num_microbatches, steps=args.gpu_steps,
                      warmup=args.gpu_warmup, dtype="bf16", fp8=precision == "fp8",
                      recompute=args.gpu_recompute)
            flops = training_flops_per_token(shape.arch(), run.seq_length)
            loops = [("nemo-exaone", ours)]
            if args.gpu_baseline and precision == "bf16":
                loops.append(("hf-llama", baseline))
            for loop_name, fn in loops:
                try:
                    result = _summary(spawn_local(fn, 1, run)[0], run)
                except RuntimeError as exc:  # e.g. out of memory: report, go on
                    rows.append({"model": shape_name, "precision": precision,
                                 "loop": loop_name, "error": str(exc).splitlines()[0]})
                    continue
                tflops = result["tokens_per_s"] * flops / 1e12
                rows.append({"model": shape_name, "precision": precision, "loop": loop_name,
                             **result, "model_tflops_per_gpu": tflops,
                             "mfu_vs_bf16_peak": tflops / bf16_peak,
                             "mfu_vs_fp8_peak": tflops / fp8_peak if precision == "fp8"
                             else None})
    print(f"GPU: {name}; seq {args.gpu_seq_length}, micro-batch {args.gpu_micro_batch_size} x "
          f"{args.gpu_num_microbatches}; dense peaks bf16 {bf16_peak} / fp8 {fp8_peak} TFLOP/s")
    print(f"{'model':24s} {'prec':5s} {'loop':12s} {'tokens/s':>10s} {'TFLOP/s':>8s} "
          f"{'MFU(bf16)':>9s}")
    for r in rows:
        if "error" in r:
            print(f"{r['model']:24s} {r['precision']:5s} {r['loop']:12s} error: {r['error']}")
            continue
        print(f"{r['model']:24s} {r['precision']:5s} {r['loop']:12s} {r['tokens_per_s']:10.0f} "
              f"{r['model_tflops_per_gpu']:8.1f} {100 * r['mfu_vs_bf16_peak']:8.1f}%")
    return {"benchmark": "train_throughput", "device": name, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", action="store_true", help="GPU mode (see module docstring)")
    cpu = parser.add_argument_group("CPU mode")
    cpu.add_argument("--hidden", type=int, default=512)
    cpu.add_argument("--layers", type=int, default=4)
    cpu.add_argument("--heads", type=int, default=8)
    cpu.add_argument("--kv-heads", type=int, default=2)
    cpu.add_argument("--ffn", type=int, default=1408)
    cpu.add_argument("--vocab", type=int, default=4096)
    cpu.add_argument("--seq-length", type=int, default=256)
    cpu.add_argument("--micro-batch-size", type=int, default=4)
    cpu.add_argument("--num-microbatches", type=int, default=2)
    cpu.add_argument("--steps", type=int, default=10)
    cpu.add_argument("--warmup", type=int, default=3)
    cpu.add_argument("--rounds", type=int, default=4)
    cpu.add_argument("--threads", type=int, default=None,
                     help="torch threads in every loop (default: torch's default); with 1, "
                     "the CPU-time ratio is robust to other jobs' load")
    cpu.add_argument("--no-compile", dest="compile", action="store_false",
                     help="only the eager loops (no compiled variants)")
    gpu = parser.add_argument_group("GPU mode")
    gpu.add_argument("--gpu-precisions", default="bf16,fp8")
    gpu.add_argument("--gpu-seq-length", type=int, default=4096)
    gpu.add_argument("--gpu-micro-batch-size", type=int, default=1)
    gpu.add_argument("--gpu-num-microbatches", type=int, default=4)
    gpu.add_argument("--gpu-steps", type=int, default=10)
    gpu.add_argument("--gpu-warmup", type=int, default=3)
    gpu.add_argument("--gpu-recompute", default=None, help="null | selective | full")
    gpu.add_argument("--gpu-baseline", action="store_true",
                     help="also time the transformers baseline (bf16 autocast)")
    args = parser.parse_args()
    result = gpu_benchmark(args) if args.gpu else cpu_benchmark(args)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
