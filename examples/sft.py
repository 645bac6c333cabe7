"""Supervised fine-tuning on chats with the project's one loop.

    python examples/sft.py --config-name tiny_cpu_sft                    # shipped chats, CPU
    python examples/sft.py --config-name tiny_cpu_sft init.checkpoint=runs/tiny_cpu
    python examples/sft.py --config-name tiny_cpu_sft train.seq_length=1024   # long context
    python examples/sft.py stage=sft data=chat data.chat_files='[chats.jsonl]' \\
        data.tokenizer_dir=TOK init.checkpoint=BASE_RUN model=from_checkpoint

Data (:mod:`nemo_exaone.data.sft_datasets`): ``{"messages": [...]}``, NeMo-Aligner's SFT chat
JSONL (``system``, ``conversations`` of ``from``/``value``, ``mask: User``) or TRL's
conversational ``prompt``/``completion``; rendered in the EXAONE chat format with the loss on
assistant tokens only. Whole conversations are packed into ``train.seq_length`` and never
attend to each other (:mod:`nemo_exaone.model.packed_attention`).
"""

from nemo_exaone.commands.hydra_app import hydra_entry

main = hydra_entry("tiny_cpu_sft")

if __name__ == "__main__":  # dist_checkpointing's saver re-imports __main__ in a subprocess
    main()
