"""Train an EXAONE model with the project's one Megatron-Core loop; every stage uses it.

    python examples/pretrain.py --config-name tiny_cpu              # (a) on a CPU
    python examples/pretrain.py --config-name tiny_cpu_continued    # (b) longer context
    python examples/pretrain.py --config-name tiny_cpu_anneal       # (c) LR to zero
    python examples/pretrain.py --config-name tiny_cpu_distill      # (d) distillation
    python examples/pretrain.py --help                              # groups and fields
    python examples/pretrain.py --config-dir my_conf --config-name mine  # your own configs
    torchrun --nproc-per-node 8 examples/pretrain.py parallel=node8_tp8 data.blend=...

Any field can be overridden (``train.max_steps=20 run.dir=runs/x``). The run directory gets
``config.yaml`` (resolved), ``metrics.jsonl``, ``events.jsonl`` and ``checkpoints/``; running
the same command again resumes from the latest checkpoint.
"""

from nemo_exaone.commands.hydra_app import hydra_entry

main = hydra_entry("pretrain")

if __name__ == "__main__":  # dist_checkpointing's saver re-imports __main__ in a subprocess
    main()
