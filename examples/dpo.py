"""Preference optimization (DPO, IPO, RPO variants, SimPO) with the project's one loop.

    python examples/dpo.py --config-name tiny_cpu            # evidence task, CPU, eval.json
    python examples/dpo.py --config-name tiny_cpu dpo.preference_loss=simpo \\
        run.dir=runs/tiny_cpu_simpo_evidence                  # SimPO ("loss.type=simpo")
    python examples/dpo.py --config-name tiny_cpu_dpo_stages  # M0 -> M1 -> M2 (online M2)
    python examples/dpo.py --config-name tiny_cpu_dpo         # toy pairs from runs/tiny_cpu
    python examples/dpo.py stage=dpo data=preference data.preference_file=pairs.jsonl \\
        data.tokenizer_dir=TOK init.checkpoint=SFT_RUN model=from_checkpoint

A config whose stage is not DPO (``tiny_cpu`` is the pretraining config) is composed again
with ``stage=dpo data=preference +dpo_recipe=evidence``: the rule-checkable instruction task
(:mod:`nemo_exaone.alignment.synthetic_task`), M0 made by SFT in ``<run.dir>/sft`` when no
``init.checkpoint`` is given, then DPO, then ``<run.dir>/eval.json`` (held-out preference
accuracy and rule-checked greedy behaviour before and after; :mod:`..alignment.stages`).

Data: NeMo-Aligner's DPO JSONL (``prompt`` string or message list, ``chosen_response``,
``rejected_response``, optional ``chosen_reward``/``rejected_reward`` for the RPO losses).
The reference policy is ``init.checkpoint`` (each stage's start); with ``dpo.reference=cache``
its log-probs are computed once and stored next to the data (``<file>.ref-<digest>.pt``),
reused by later runs. Metrics: ``loss``, ``loss/preference accuracy`` (implicit reward of
chosen above rejected), ``loss/preference margin``, ``loss/sft``.
"""

from nemo_exaone.alignment.stages import run_preference_pipeline
from nemo_exaone.commands.hydra_app import hydra_entry

main = hydra_entry("tiny_cpu_dpo", train_fn=run_preference_pipeline,
                   stage=("dpo", ["stage=dpo", "data=preference", "+dpo_recipe=evidence"]))

if __name__ == "__main__":  # dist_checkpointing's saver re-imports __main__ in a subprocess
    main()
