"""Generation throughput: ``nemo_exaone.inference.generate`` (Megatron-Core's static engine,
KV cache) against transformers' ``generate`` on the HF export of the same checkpoint, same
prompts, greedy, in the same run.

A random checkpoint of the requested shape (default: the ``tiny`` preset; weights drawn wide
so that greedy continuations are not ties) is written in HF format, imported to Megatron and
exported back; ``--ckpt`` takes an existing Megatron checkpoint instead (it is exported to a
temporary directory). Both sides generate exactly ``--new-tokens`` tokens per prompt (no stop
ids), batch of ``--batch`` prompts whose lengths spread over ``--prompt-len`` +- 25%
(transformers pads them on the left; ours runs them in static batches grouped by length,
``nemo_exaone.inference.generation.length_groups``). Each side is warmed up once, then timed ``--repeats``
times in alternation; reported: generated tokens per second of the best and median repeat, and
whether the greedy tokens agree. Prints a table and a final JSON line::

    python benchmarks/generate.py                                   # tiny, ~1-2 minutes
    python benchmarks/generate.py --prompt-len 300 --new-tokens 64
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch


def _prompts(batch: int, length: int, vocab: int, seed: int) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    spread = max(1, length // 4)
    lengths = [max(1, length - spread + (2 * spread * i) // max(1, batch - 1))
               for i in range(batch)]
    return [torch.randint(4, vocab, (n,), generator=gen).tolist() for n in lengths]


def _make_checkpoint(root: Path, preset: str) -> Path:
    from nemo_exaone.checkpoint.hf_to_mcore import convert_hf_to_mcore
    from nemo_exaone.checkpoint.synthetic import write_random_hf_checkpoint
    from nemo_exaone.config.presets import get_preset

    hf = write_random_hf_checkpoint(root / "hf", get_preset(preset), seed=1, std=0.2)
    convert_hf_to_mcore(hf, root / "ckpt", progress=False)
    return root / "ckpt"


def _hf_generate(model, prompts: list[list[int]], new: int) -> list[list[int]]:
    width = max(len(p) for p in prompts)
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, prompt in enumerate(prompts):  # left padding, as generate expects
        ids[row, width - len(prompt):] = torch.tensor(prompt)
        mask[row, width - len(prompt):] = 1
    with torch.no_grad():
        out = model.generate(ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new,
                             do_sample=False, eos_token_id=None, pad_token_id=0)
    return out[:, width:].tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", default=None, help="Megatron checkpoint (default: random)")
    parser.add_argument("--preset", default="tiny", help="shape of the random checkpoint")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (both sides)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from transformers import AutoModelForCausalLM

    from nemo_exaone.checkpoint.mcore_to_hf import convert_mcore_to_hf
    from nemo_exaone.inference import GenerationConfig, generate
    from nemo_exaone.inference.loading import load_for_generation
    from nemo_exaone.runtime.distributed import destroy_distributed

    with tempfile.TemporaryDirectory(prefix="bench_generate_") as tmp:
        root = Path(tmp)
        ckpt = Path(args.ckpt) if args.ckpt else _make_checkpoint(root, args.preset)
        convert_mcore_to_hf(ckpt, root / "export", progress=False)
        loaded = load_for_generation(ckpt)
        hf = AutoModelForCausalLM.from_pretrained(root / "export", dtype=torch.float32).eval()
        prompts = _prompts(args.batch, args.prompt_len, loaded.arch.vocab_size, seed=0)
        config = GenerationConfig(max_new_tokens=args.new_tokens)  # no stop ids: full length

        def ours() -> list[list[int]]:
            return [g.token_ids for g in generate(loaded.chunks, prompts, config)]

        def theirs() -> list[list[int]]:
            return _hf_generate(hf, prompts, args.new_tokens)

        runs = {"nemo-exaone (Megatron-Core static engine)": ours,
                "transformers generate": theirs}
        outputs = {name: fn() for name, fn in runs.items()}  # warm-up, and the tokens
        times: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.repeats):
            for name, fn in runs.items():
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
        destroy_distributed()
    generated = args.batch * args.new_tokens
    ours_name, hf_name = list(runs)
    rows = {name: {"best_tokens_per_s": generated / min(t),
                   "median_tokens_per_s": generated / statistics.median(t)}
            for name, t in times.items()}
    same = outputs[ours_name] == outputs[hf_name]
    print(f"batch {args.batch}, prompt lengths {min(map(len, prompts))}-"
          f"{max(map(len, prompts))}, {args.new_tokens} new tokens each, {args.repeats} "
          f"repeats, load average {os.getloadavg()[0]:.1f}, torch threads "
          f"{torch.get_num_threads()}")
    print(f"| {'generator':45s} | best tok/s | median tok/s | ratio (median) |")
    print(f"|{'-' * 47}|------------|--------------|----------------|")
    base = rows[hf_name]["median_tokens_per_s"]
    for name, row in rows.items():
        print(f"| {name:45s} | {row['best_tokens_per_s']:10.1f} | "
              f"{row['median_tokens_per_s']:12.1f} | {row['median_tokens_per_s'] / base:14.2f} |")
    print(f"greedy tokens identical: {same}")
    print(json.dumps({"benchmark": "generate", "preset": None if args.ckpt else args.preset,
                      "batch": args.batch, "prompt_len": args.prompt_len,
                      "new_tokens": args.new_tokens, "repeats": args.repeats,
                      "ours": rows[ours_name], "transformers": rows[hf_name],
                      "ratio_median": rows[ours_name]["median_tokens_per_s"] / base,
                      "tokens_identical": same, "load_average": os.getloadavg()[0]}))


if __name__ == "__main__":
    main()
