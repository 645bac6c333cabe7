"""Preprocessing throughput (tokens/s): ``nemo-exaone data preprocess`` vs a plain loop.

Input: the shipped bilingual corpus repeated (with shuffled sentence order) to --mb MB of
JSONL. Tokenizer: the tiny demo tokenizer (vocab 1024) unless --tokenizer is given.
In the same run:

* plain loop: one process, ``json.loads`` -> ``Tokenizer.encode`` -> Megatron
  ``IndexedDatasetBuilder.add_document``, line by line;
* nemo_exaone with 1 and 2 worker processes (chunks of lines tokenized in workers, written
  in order by the parent).

Prints a table and a final JSON line.

    python benchmarks/preprocess.py [--mb 20] [--repeats 2] [--tokenizer DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _make_input(path: Path, megabytes: float) -> None:
    from nemo_exaone.data.assets import asset_paths

    rng = random.Random(7)
    docs = [json.loads(line)["text"] for line in
            asset_paths()["corpus"].read_text(encoding="utf-8").splitlines()]
    size = 0
    with open(path, "w", encoding="utf-8") as out:
        while size < megabytes * 1e6:
            parts = rng.sample(docs, rng.randint(1, 4))
            line = json.dumps({"text": "\n".join(parts)}, ensure_ascii=False) + "\n"
            out.write(line)
            size += len(line.encode("utf-8"))


def _plain_loop(input_path: Path, prefix: Path, tokenizer_dir: str) -> tuple[int, float]:
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    from nemo_exaone.data.preprocess import token_dtype_for_vocab
    from nemo_exaone.data.tokenizer import load_tokenizer

    started = time.perf_counter()
    tokenizer = load_tokenizer(tokenizer_dir)
    builder = IndexedDatasetBuilder(f"{prefix}.bin",
                                    dtype=token_dtype_for_vocab(tokenizer.vocab_size))
    tokens = 0
    with open(input_path, encoding="utf-8") as handle:
        for line in handle:
            ids = tokenizer.backend.encode(json.loads(line)["text"], add_special_tokens=False).ids
            ids.append(tokenizer.eod_id)
            builder.add_document(np.asarray(ids), [len(ids)])
            tokens += len(ids)
    builder.finalize(f"{prefix}.idx")
    return tokens, time.perf_counter() - started


def _ours(input_path: Path, prefix: Path, tokenizer_dir: str, workers: int) -> tuple[int, float]:
    from nemo_exaone.data.preprocess import PreprocessConfig, preprocess

    started = time.perf_counter()
    result = preprocess(PreprocessConfig(inputs=[str(input_path)], output_prefix=str(prefix),
                                         tokenizer_dir=tokenizer_dir, workers=workers,
                                         show_progress=False))
    return result.tokens, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=20.0, help="input JSONL size in MB")
    parser.add_argument("--repeats", type=int, default=2, help="runs per variant (best kept)")
    parser.add_argument("--tokenizer", help="tokenizer directory (default: tiny demo tokenizer)")
    args = parser.parse_args()
    import megatron.core.datasets.indexed_dataset  # noqa: F401  (import time is not measured)

    load = os.getloadavg()

    from nemo_exaone.data.assets import build_tiny_tokenizer

    with tempfile.TemporaryDirectory(prefix="preprocess_bench_") as tmp:
        workdir = Path(tmp)
        tokenizer_dir = args.tokenizer or str(build_tiny_tokenizer(workdir / "tok"))
        input_path = workdir / "input.jsonl"
        _make_input(input_path, args.mb)
        variants = {
            "plain loop (1 process)": lambda p: _plain_loop(input_path, p, tokenizer_dir),
            "nemo_exaone, 1 worker": lambda p: _ours(input_path, p, tokenizer_dir, 1),
            "nemo_exaone, 2 workers": lambda p: _ours(input_path, p, tokenizer_dir, 2),
        }
        timings: dict[str, list[float]] = {name: [] for name in variants}
        counts: dict[str, int] = {}
        for repeat in range(args.repeats):  # interleaved, so load changes hit all variants
            for name, run in variants.items():
                tokens, seconds = run(workdir / f"out{repeat}-{len(timings[name])}")
                timings[name].append(seconds)
                counts[name] = tokens
        outputs = {p.read_bytes() for p in workdir.glob("out*.bin")}
    base = counts["plain loop (1 process)"] / min(timings["plain loop (1 process)"])
    print(f"load average before the run: {load[0]:.2f} on {os.cpu_count()} cores")
    print(f"input {args.mb:.1f} MB JSONL, {counts['plain loop (1 process)']:,} tokens, "
          f"identical outputs: {len(outputs) == 1}")
    header = f"{'variant':26s} {'tokens/s':>12s} {'x plain':>8s} {'best s':>8s}"
    print(header)
    print("-" * len(header))
    results = {}
    for name in variants:
        best = min(timings[name])
        rate = counts[name] / best
        results[name] = {"tokens_per_s": round(rate), "ratio": round(rate / base, 2),
                         "seconds": round(best, 3)}
        print(f"{name:26s} {rate:12,.0f} {rate / base:8.2f} {best:8.2f}")
    print(json.dumps({"benchmark": "preprocess", "input_mb": args.mb,
                      "load_average": round(load[0], 2), "cores": os.cpu_count(),
                      "tokens": counts["plain loop (1 process)"], "variants": results,
                      "identical_outputs": len(outputs) == 1}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
