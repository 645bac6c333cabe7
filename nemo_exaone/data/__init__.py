"""Data layer: tokenizer and chat format, preprocessing, blends, decontamination, datasets.

Modules (imported on demand; this package imports nothing heavy):

* ``tokenizer``            ``load_tokenizer(dir) -> ExaoneTokenizer`` (tokenizer.json or
                           vocab.json + merges.txt); ``eod_id`` = ``[|endofturn|]``.
* ``chat_format``          ``render_chat(messages, add_generation_prompt)``,
                           ``encode_chat(tokenizer, messages) -> ChatEncoding(ids, assistant_mask)``.
* ``tokenizer_training``   byte-level BPE training (optional MeCab/Kiwi morpheme splits).
* ``preprocess``           JSONL -> Megatron ``.bin/.idx`` (+ ``_assistant_mask`` for chat).
* ``blends``               ``BlendConfig`` (weights, stage-1 replay by tokens), ``resolve_blend``.
* ``pretraining_datasets`` ``build_pretraining_datasets(...)`` via Megatron's builder.
* ``document_datasets``    whole-document readers: ``build_long_context_dataset``,
                           ``build_sft_dataset`` (loss on assistant tokens only).
* ``decontamination``      EXAONE 3.5 substring decontamination (+ whole short items);
                           ``window_hash``: its one window hash, ``decontamination_fastpath``:
                           block-at-a-time parsing and normalization.
* ``jsonl``                strict JSONL reading: every bad line is ``file:line: reason``.
* ``assets``               shipped demo data and ``build_tiny_tokenizer(cache_dir)``.
* ``cli``                  ``nemo-exaone data ...``.
"""
