"""The main job in miniature on CPU (`make demo`): the EXAONE recipe as far as it exists.

Each stage is the same `nemo-exaone` command a user would run, reading and writing
documented files under ``--dir`` (default ``runs/demo``):

  1. decontaminate the shipped bilingual corpus against the shipped benchmark test set
  2. train a byte-level BPE tokenizer on the clean corpus
  3. tokenize into Megatron indexed datasets (stage-1 and stage-2 halves)
  4. stage (a): core pretraining of the tiny EXAONE preset
  5. stage (b): continued pretraining, twice the context, whole documents, 25% replay
  6. export the stage-(b) checkpoint as an HF EXAONE checkpoint
  7. parallel check: the same weights and batches at TP=1 and TP=2 + sequence parallel

A stage whose output exists is skipped, so an interrupted demo resumes where it stopped;
``--fresh`` starts over. Post-training, serving and the HTML report join as they land.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class StageResult:
    name: str
    seconds: float
    summary: str
    skipped: bool = False


def _run(cmd: list[str], log: Path) -> None:
    """Run one CLI step, its output to ``log``; on failure show the log's tail and stop."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise SystemExit(f"[demo] step failed: {' '.join(cmd)}\n--- {log} (last lines) ---\n"
                         f"{tail}")


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "nemo_exaone.cli", *args]


def _losses(run_dir: Path) -> list[float]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line)["loss"] for line in path.read_text().splitlines() if line.strip()]


def _split_halves(src: Path, first: Path, second: Path) -> tuple[int, int]:
    """Alternate documents into two files: stage-1 data and 'new' stage-2 data."""
    lines = [line for line in src.read_text(encoding="utf-8").splitlines() if line.strip()]
    a, b = lines[0::2], lines[1::2]
    first.write_text("\n".join(a) + "\n", encoding="utf-8")
    second.write_text("\n".join(b) + "\n", encoding="utf-8")
    return len(a), len(b)


def run_pipeline(root: Path, steps_a: int, steps_b: int) -> list[StageResult]:
    from nemo_exaone.data.assets import asset_paths

    results: list[StageResult] = []
    data, logs = root / "data", root / "logs"
    data.mkdir(parents=True, exist_ok=True)

    summaries_path = root / "summary.json"
    summaries = json.loads(summaries_path.read_text()) if summaries_path.exists() else {}

    def stage(name: str, done: Path, fn) -> None:
        start = time.perf_counter()
        if done.exists():
            earlier = summaries.get(name, "")
            results.append(StageResult(name, 0.0, f"done earlier: {earlier}", skipped=True))
        else:
            summary = fn()
            results.append(StageResult(name, time.perf_counter() - start, summary))
            summaries[name] = summary
            summaries_path.write_text(json.dumps(summaries, indent=1, ensure_ascii=False))
        r = results[-1]
        print(f"[demo] {r.name:<24s} {r.seconds:6.1f} s  {r.summary}", flush=True)

    clean, report = data / "corpus.clean.jsonl", data / "decontamination.json"

    def decontaminate() -> str:
        _run(_cli("data", "decontaminate", "--train", str(asset_paths()["corpus"]),
                  "--test", str(asset_paths()["benchmark_test"]), "--out", str(clean),
                  "--report", str(report), "--test-key", "question", "--test-key", "choices",
                  "--overwrite", "--quiet"), logs / "decontaminate.log")
        rep = json.loads(report.read_text())
        return f"removed {rep['removed']}, kept {rep['kept']} documents"

    stage("1 decontaminate", report, decontaminate)

    tokenizer = root / "tokenizer"

    def train_tokenizer() -> str:
        _run(_cli("data", "train-tokenizer", "--input", str(clean), "--output", str(tokenizer),
                  "--vocab-size", "2048"), logs / "tokenizer.log")
        vocab = json.loads((tokenizer / "tokenizer.json").read_text())["model"]["vocab"]
        return f"byte-level BPE, {len(vocab)} tokens"

    stage("2 train tokenizer", tokenizer / "tokenizer.json", train_tokenizer)

    stage1, stage2 = data / "stage1", data / "stage2"

    def preprocess() -> str:
        n1, n2 = _split_halves(clean, data / "stage1.jsonl", data / "stage2.jsonl")
        for prefix in (stage1, stage2):
            _run(_cli("data", "preprocess", "--input", f"{prefix}.jsonl", "--output-prefix",
                      str(prefix), "--tokenizer", str(tokenizer), "--overwrite", "--quiet"),
                 logs / f"preprocess_{prefix.name}.log")
        tokens = [json.loads(Path(f"{p}.stats.json").read_text()).get("tokens", "?")
                  for p in (stage1, stage2)]
        return f"stage1 {n1} docs / {tokens[0]} tokens, stage2 {n2} docs / {tokens[1]} tokens"

    stage("3 preprocess", Path(f"{stage2}.idx"), preprocess)

    run_a, run_b = root / "stage_a_pretrain", root / "stage_b_continued"
    common = ["data.source=indexed", f"data.tokenizer_dir={tokenizer}",
              "checkpoint.async_save=false"]

    def pretrain() -> str:
        _run(_cli("train", "--config-name", "tiny_cpu", f"run.dir={run_a}",
                  f"train.max_steps={steps_a}", f"checkpoint.save_interval={steps_a}",
                  f"data.blend=[{{prefix: {stage1}, weight: 1.0}}]", *common),
             logs / "stage_a.log")
        losses = _losses(run_a)
        return f"{steps_a} steps, loss {losses[0]:.3f} -> {losses[-1]:.3f}"

    stage("4 stage (a) pretrain", run_a / "checkpoints", pretrain)

    def continued() -> str:
        _run(_cli("train", "--config-name", "tiny_cpu_continued", f"run.dir={run_b}",
                  f"init.checkpoint={run_a}", f"train.max_steps={steps_b}",
                  f"checkpoint.save_interval={steps_b}",
                  f"data.blend=[{{prefix: {stage2}, weight: 1.0}}]",
                  f"data.replay=[{{prefix: {stage1}, weight: 1.0}}]", "data.replay_fraction=0.25",
                  *common), logs / "stage_b.log")
        losses = _losses(run_b)
        return (f"{steps_b} steps at seq 256 (whole docs, 25% replay), loss "
                f"{losses[0]:.3f} -> {losses[-1]:.3f}")

    stage("5 stage (b) continued", run_b / "checkpoints", continued)

    hf_out = root / "hf_export"

    def export() -> str:
        _run(_cli("convert", "mcore-to-hf", "--ckpt", str(run_b),  # its latest checkpoint
                  "--tokenizer", str(tokenizer), "--out", str(hf_out), "--quiet"),
             logs / "export.log")
        files = sorted(p.name for p in hf_out.iterdir())
        return f"{len(files)} files: {', '.join(files[:6])}{' ...' if len(files) > 6 else ''}"

    stage("6 export to HF", hf_out / "config.json", export)

    def parallel_check() -> str:
        from nemo_exaone.config.parallel import ParallelConfig
        from nemo_exaone.runtime.launch import spawn_local
        from nemo_exaone.training.parity import ParityConfig, run_parity_training

        tp1 = [m["loss"] for m in spawn_local(run_parity_training, 1, ParityConfig(steps=5))[0]]
        tp2 = [m["loss"] for m in spawn_local(run_parity_training, 2, ParityConfig(
            steps=5, parallel=ParallelConfig(tensor_model_parallel_size=2,
                                             sequence_parallel=True)))[0]]
        rel = max(abs(a - b) / abs(b) for a, b in zip(tp2, tp1))
        (root / "parallel_check.json").write_text(json.dumps({"tp1": tp1, "tp2_sp": tp2}))
        return f"TP=1 vs TP=2+SP over 5 steps: max relative loss difference {rel:.1e}"

    stage("7 parallel check", root / "parallel_check.json", parallel_check)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nemo_exaone.demo",
        description="Run the EXAONE recipe in miniature on CPU: decontaminate, tokenizer, "
        "preprocess, pretrain, continued pretraining with replay and longer context, HF "
        "export, parallel check. Re-running skips finished stages.")
    parser.add_argument("--dir", type=Path, default=Path("runs/demo"),
                        help="where every stage writes (default: runs/demo)")
    parser.add_argument("--steps-a", type=int, default=60, help="stage (a) optimizer steps")
    parser.add_argument("--steps-b", type=int, default=20, help="stage (b) optimizer steps")
    parser.add_argument("--fresh", action="store_true", help="delete --dir first")
    args = parser.parse_args(argv)
    # Library deprecation chatter from Megatron/torch in the worker processes is not news to
    # a demo user (spawned workers inherit this; the CLI steps filter their own).
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    if args.fresh and args.dir.exists():
        shutil.rmtree(args.dir)
    start = time.perf_counter()
    print(f"[demo] EXAONE recipe in miniature on CPU -> {args.dir}", flush=True)
    results = run_pipeline(args.dir, args.steps_a, args.steps_b)
    print(f"[demo] done in {time.perf_counter() - start:.0f} s; logs in {args.dir / 'logs'}")
    losses = _losses(args.dir / "stage_a_pretrain")
    if args.steps_a >= 20 and losses and not losses[-1] < losses[0]:
        print("[demo] error: stage (a) loss did not decrease", file=sys.stderr)
        return 1
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
