"""DPO step time with the cached reference log-probs against recomputing the reference each step.

Both runs train the same policy (tiny EXAONE by default, or ``--preset``) on the same toy
preference pairs with the project's one loop (``stage.objective=dpo``), from the same
reference checkpoint (a freshly initialised model, saved once); ``dpo.reference=cache``
computes the reference log-probs once (before step 1, not timed) and
``dpo.reference=on_the_fly`` runs the frozen reference forward beside the policy every
micro-batch. Each run is a fresh process; the runs alternate for ``--rounds`` rounds.
Reported: the median step time of each run (warm-up steps excluded), the ratio within each
round (paired, so load swings between rounds cancel) and its median; prints a final JSON
line. On a machine shared with other jobs the figures are noisy; the ratio is the figure.

    python benchmarks/dpo_step.py                    # tiny model, CPU, about 2-4 minutes
    python benchmarks/dpo_step.py --preset tiny --steps 8 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from nemo_exaone.runtime.launch import spawn_local

ROOT = Path(__file__).resolve().parents[1]


def _make_reference(directory: str, preset: str) -> None:
    from nemo_exaone.checkpoint.mcore_checkpoint import save_mcore_checkpoint
    from nemo_exaone.config.presets import get_preset
    from nemo_exaone.model.builder import build_model_chunks
    from nemo_exaone.runtime.distributed import destroy_distributed, init_distributed

    try:
        init_distributed(seed=3)
        arch = get_preset(preset)
        save_mcore_checkpoint(build_model_chunks(arch), Path(directory) / "ref", arch)
    finally:
        destroy_distributed()


def _run(directory: str, name: str, mode: str, preset: str, steps: int) -> list[float]:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from nemo_exaone.commands.hydra_app import job_config, register_configs
    from nemo_exaone.training.loop import train

    GlobalHydra.instance().clear()
    register_configs()
    root = Path(directory)
    with initialize_config_dir(config_dir=str(ROOT / "nemo_exaone" / "conf"), version_base="1.3"):
        cfg = job_config(compose(config_name="tiny_cpu_dpo", overrides=[
            f"model={preset}", f"run.dir={root / name}", f"data.prepare_dir={root / 'prep'}",
            f"init.checkpoint={root / 'ref'}", f"dpo.reference={mode}",
            f"train.max_steps={steps}", "train.micro_batch_size=4",
            "train.global_batch_size=8", "checkpoint.save_at_end=false",
            "logging.progress=none", "logging.tensorboard=false"]))
    return [r["step_time_s"] for r in train(cfg).metrics]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny", help="model config group (default: tiny)")
    parser.add_argument("--steps", type=int, default=8, help="steps per run (default: 8)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed first steps")
    parser.add_argument("--rounds", type=int, default=2, help="cache/on-the-fly pairs")
    args = parser.parse_args(argv)
    if args.steps <= args.warmup:
        parser.error("--steps must exceed --warmup")
    with tempfile.TemporaryDirectory(prefix="dpo_step_") as tmp:
        spawn_local(_make_reference, 1, tmp, args.preset)
        times: dict[str, list[float]] = {"cache": [], "on_the_fly": []}
        ratios = []
        for i in range(args.rounds):
            medians = {}
            for mode in ("cache", "on_the_fly") if i % 2 == 0 else ("on_the_fly", "cache"):
                steps = spawn_local(_run, 1, tmp, f"{mode}{i}", mode, args.preset,
                                    args.steps)[0][args.warmup:]
                medians[mode] = statistics.median(steps)
                times[mode].append(medians[mode])
            ratios.append(medians["on_the_fly"] / medians["cache"])
    result = {"preset": args.preset, "steps_timed": args.steps - args.warmup,
              "rounds": args.rounds,
              "median_step_s_cache": statistics.median(times["cache"]),
              "median_step_s_on_the_fly": statistics.median(times["on_the_fly"]),
              "ratio_on_the_fly_over_cache": statistics.median(ratios),
              "ratios": ratios, "loadavg_1min": os.getloadavg()[0]}
    print(f"DPO step, {args.preset}: cache {result['median_step_s_cache']:.3f} s, "
          f"reference on the fly {result['median_step_s_on_the_fly']:.3f} s; "
          f"on-the-fly / cache = {result['ratio_on_the_fly_over_cache']:.2f}x "
          f"(median of {args.rounds} paired rounds)")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
