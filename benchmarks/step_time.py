"""Step time of the tiny preset on CPU at TP=1, TP=2+SP and PP=2, measured in one run.

Median of 20 timed optimizer steps after 5 warm-up steps; each layout is a real gloo group.
Prints a table and a final JSON line. Usage: python benchmarks/step_time.py [--steps 20]
"""

from __future__ import annotations

import argparse
import json
import statistics

from nemo_exaone.config.parallel import ParallelConfig
from nemo_exaone.runtime.launch import spawn_local
from nemo_exaone.training.parity import ParityConfig, run_parity_training

LAYOUTS = {
    "TP=1": (1, ParallelConfig()),
    "TP=2+SP": (2, ParallelConfig(tensor_model_parallel_size=2, sequence_parallel=True)),
    "PP=2": (2, ParallelConfig(pipeline_model_parallel_size=2)),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per layout")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--micro-batch-size", type=int, default=4)
    parser.add_argument("--seq-length", type=int, default=64)
    parser.add_argument("--num-microbatches", type=int, default=2)
    args = parser.parse_args()
    results = {}
    for name, (world, parallel) in LAYOUTS.items():
        cfg = ParityConfig(parallel=parallel, steps=args.warmup + args.steps,
                          micro_batch_size=args.micro_batch_size, seq_length=args.seq_length,
                          num_microbatches=args.num_microbatches)
        metrics = spawn_local(run_parity_training, world, cfg)[0][args.warmup:]
        times = [m["step_time_s"] * 1000 for m in metrics]
        results[name] = {"median_ms": statistics.median(times), "min_ms": min(times),
                         "max_ms": max(times), "processes": world}
    tokens = args.micro_batch_size * args.seq_length * args.num_microbatches
    print(f"tiny preset, fp32 CPU, global batch {tokens} tokens/step, "
          f"median of {args.steps} steps")
    print(f"{'layout':10s} {'procs':>5s} {'median ms':>10s} {'min':>8s} {'max':>8s} "
          f"{'vs TP=1':>8s}")
    base = results["TP=1"]["median_ms"]
    for name, r in results.items():
        print(f"{name:10s} {r['processes']:5d} {r['median_ms']:10.1f} {r['min_ms']:8.1f} "
              f"{r['max_ms']:8.1f} {r['median_ms'] / base:8.2f}x")
    print(json.dumps({"benchmark": "step_time", "tokens_per_step": tokens, **results}))


if __name__ == "__main__":
    main()
