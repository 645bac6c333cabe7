"""Preference optimization (DPO, IPO, RPO variants, SimPO) with the project's one loop.

    python examples/dpo.py --config-name tiny_cpu_dpo                    # toy task, CPU
    python examples/dpo.py --config-name tiny_cpu_dpo dpo.preference_loss=simpo \\
        dpo.ref_policy_kl_penalty=2.0 run.dir=runs/tiny_cpu_simpo
    python examples/dpo.py --config-name tiny_cpu_dpo dpo.reference=on_the_fly
    python examples/dpo.py stage=dpo data=preference data.preference_file=pairs.jsonl \\
        data.tokenizer_dir=TOK init.checkpoint=SFT_RUN model=from_checkpoint

Data: NeMo-Aligner's DPO JSONL (``prompt`` string or message list, ``chosen_response``,
``rejected_response``, optional ``chosen_reward``/``rejected_reward`` for the RPO losses).
The reference policy is ``init.checkpoint``; with ``dpo.reference=cache`` its log-probs are
computed once and stored next to the data (``<file>.ref-<digest>.pt``), reused by later runs.
Metrics: ``loss``, ``loss/preference accuracy`` (implicit reward of chosen above rejected),
``loss/preference margin``, ``loss/sft``.
"""

from nemo_exaone.commands.hydra_app import hydra_entry

main = hydra_entry("tiny_cpu_dpo")

if __name__ == "__main__":  # dist_checkpointing's saver re-imports __main__ in a subprocess
    main()
