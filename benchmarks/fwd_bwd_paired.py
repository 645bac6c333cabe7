"""Forward+backward time of our model (eager and with ``model.compile``) and transformers'
Llama of the same shape, in ONE process, steps alternated.

On a machine shared with other jobs, separate processes are scheduled differently (the
training-loop benchmark saw the baseline process wait 5x its CPU time); alternating single
steps in one process gives every variant the same conditions. No optimizer: this isolates
the model. Transformers' model runs with the CPU compatibility layer's torch-function mode
disabled (it is ours, not theirs). Prints a table and a final JSON line.

    python benchmarks/fwd_bwd_paired.py --threads 2 --pairs 8
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--pairs", type=int, default=8, help="timed rounds of all variants")
    parser.add_argument("--seq-length", type=int, default=256)
    parser.add_argument("--micro-batch-size", type=int, default=4)
    args = parser.parse_args()

    import os

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from nemo_exaone.config.presets import get_preset
    from nemo_exaone.model.builder import ModelOptions, build_model
    from nemo_exaone.runtime.distributed import init_distributed

    torch.set_num_threads(args.threads)
    init_distributed()
    arch = dataclasses.replace(get_preset("tiny"), hidden_size=512, num_layers=4,
                               num_attention_heads=8, num_key_value_heads=2,
                               intermediate_size=1408, vocab_size=4096,
                               tie_word_embeddings=False)
    b, s, v = args.micro_batch_size, args.seq_length, arch.vocab_size
    torch.manual_seed(0)
    tokens, labels = torch.randint(0, v, (b, s)), torch.randint(0, v, (b, s))
    positions = torch.arange(s).unsqueeze(0).expand(b, -1)
    extra = {"calculate_per_token_loss": True}
    eager = build_model(arch, options=ModelOptions(spec="local", extra_config=extra))
    compiled = build_model(arch, options=ModelOptions(spec="local", compile=True,
                                                      extra_config=extra))
    compiled.load_state_dict(eager.state_dict())
    with torch._C.DisableTorchFunction():
        hf = LlamaForCausalLM(LlamaConfig(
            vocab_size=v, hidden_size=arch.hidden_size, intermediate_size=arch.intermediate_size,
            num_hidden_layers=arch.num_layers, num_attention_heads=arch.num_attention_heads,
            num_key_value_heads=arch.num_key_value_heads, head_dim=arch.head_dim,
            tie_word_embeddings=False, attention_bias=False, mlp_bias=False))
    for model in (eager, compiled, hf):
        model.train()

    def ours(model):
        (model(tokens, positions, None, labels=labels).sum() / (b * s)).backward()

    def theirs():
        with torch._C.DisableTorchFunction():
            logits = hf(input_ids=tokens).logits
            torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten()).backward()

    variants = {"ours": lambda: ours(eager), "ours compiled": lambda: ours(compiled),
                "hf llama": theirs}
    for fn in variants.values():  # warm-up (compiles)
        for _ in range(2):
            fn()
    wall = {k: [] for k in variants}
    cpu = {k: [] for k in variants}
    load = [os.getloadavg()[0]]
    for i in range(args.pairs):
        names = list(variants)
        for name in names[i % 3:] + names[:i % 3]:
            start, start_cpu = time.perf_counter(), time.process_time()
            variants[name]()
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    load.append(os.getloadavg()[0])
    result = {"threads": args.threads, "tokens": b * s, "load": load, "variants": {}}
    print(f"fwd+bwd, {b} x {s} tokens, fp32, {args.threads} threads, {args.pairs} rounds, "
          f"load {min(load):.1f}-{max(load):.1f}")
    print(f"{'variant':16s} {'median wall ms':>14s} {'median cpu ms':>14s} "
          f"{'hf/this wall (paired)':>22s} {'hf/this cpu (paired)':>21s}")
    for name in variants:
        ratio_wall = statistics.median(h / o for h, o in zip(wall["hf llama"], wall[name]))
        ratio_cpu = statistics.median(h / o for h, o in zip(cpu["hf llama"], cpu[name]))
        result["variants"][name] = {"median_wall_s": statistics.median(wall[name]),
                                    "median_cpu_s": statistics.median(cpu[name]),
                                    "speed_vs_hf_wall": ratio_wall,
                                    "speed_vs_hf_cpu": ratio_cpu}
        print(f"{name:16s} {1000 * statistics.median(wall[name]):14.1f} "
              f"{1000 * statistics.median(cpu[name]):14.1f} {ratio_wall:22.3f} "
              f"{ratio_cpu:21.3f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
