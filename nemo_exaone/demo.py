"""The main job in miniature on CPU (`make demo`).

Today: train the tiny EXAONE preset for a few steps with Megatron-Core at TP=1, then the same
weights and batches as a 2-process TP=2 + sequence-parallel group, and print both loss curves.
The end-to-end recipe (data -> stages -> alignment -> export -> serve) grows here stage by
stage as each lands.
"""

from __future__ import annotations

import argparse
import sys
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nemo_exaone.demo",
        description="Train the tiny EXAONE preset on CPU at TP=1 and at TP=2+SP and compare.")
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps per layout")
    args = parser.parse_args(argv)

    from nemo_exaone.config.parallel import ParallelConfig
    from nemo_exaone.runtime.launch import spawn_local
    from nemo_exaone.training.smoke import SmokeConfig, run_smoke_training

    layouts = {
        "TP=1": (1, ParallelConfig()),
        "TP=2+SP": (2, ParallelConfig(tensor_model_parallel_size=2, sequence_parallel=True)),
    }
    curves = {}
    for name, (world, parallel) in layouts.items():
        start = time.perf_counter()
        print(f"[demo] training preset 'tiny' for {args.steps} steps at {name} "
              f"({world} process{'es' if world > 1 else ''}, gloo, fp32)...", flush=True)
        result = spawn_local(run_smoke_training, world,
                             SmokeConfig(parallel=parallel, steps=args.steps))[0]
        curves[name] = [m["loss"] for m in result]
        print(f"[demo]   done in {time.perf_counter() - start:.1f} s", flush=True)
    print(f"\n{'step':>5}  " + "  ".join(f"{n:>10}" for n in curves))
    for i in range(args.steps):
        print(f"{i + 1:>5}  " + "  ".join(f"{c[i]:>10.5f}" for c in curves.values()))
    a, b = curves.values()
    max_rel = max(abs(x - y) / abs(y) for x, y in zip(a, b))
    print(f"\nloss {a[0]:.4f} -> {a[-1]:.4f}; max relative difference between layouts "
          f"{max_rel:.2e}")
    if not a[-1] < a[0]:
        print("[demo] error: the loss did not decrease", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
