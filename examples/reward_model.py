"""Train a reward model (scalar head on the EXAONE backbone, Bradley-Terry loss on
chosen/rejected pairs) with the project's one training loop.

    python examples/reward_model.py --config-name tiny_cpu_rm            # toy task, CPU
    python examples/reward_model.py --config-name tiny_cpu_rm init.checkpoint=runs/sft
    torchrun --nproc-per-node 2 examples/reward_model.py --config-name tiny_cpu_rm parallel=tp2
    python examples/reward_model.py stage=reward data=preference \\
        data.preference_file=pairs.jsonl data.tokenizer_dir=TOK init.checkpoint=SFT_RUN \\
        model=from_checkpoint

Data: NeMo-Aligner's DPO JSONL (``prompt`` string or message list, ``chosen_response``,
``rejected_response``). Metrics: ``loss`` (Bradley-Terry), ``loss/reward accuracy`` (pairs
with the chosen scored above the rejected), ``loss/reward margin``. Score afterwards with
``nemo-exaone align score --ckpt <run.dir> --input prompts_responses.jsonl --out scores.jsonl``.
"""

from nemo_exaone.commands.hydra_app import hydra_entry

main = hydra_entry("tiny_cpu_rm")

if __name__ == "__main__":  # dist_checkpointing's saver re-imports __main__ in a subprocess
    main()
