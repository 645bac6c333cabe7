"""A tiny tokenizer and checkpoint for the serving tests (shared by their modules)."""

from __future__ import annotations

from pathlib import Path

SPECIALS = ["[PAD]", "[BOS]", "[UNK]", "[|endofturn|]", "[|system|]", "[|user|]",
            "[|assistant|]"]
EOT = 3


def write_tokenizer(directory: Path):
    """A byte-level BPE tokenizer trained here with EXAONE's special tokens (HF files)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from nemo_exaone.data.chat_format import CHAT_TEMPLATE

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(["hello world, the model speaks Korean: 안녕하세요. The quick brown "
                             "fox jumps over the lazy dog."] * 20,
                            trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS,
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    assert tok.token_to_id("[|endofturn|]") == EOT
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", bos_token="[BOS]",
                                   unk_token="[UNK]", eos_token="[|endofturn|]")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(directory)
    return tok


def tiny_checkpoint(root: Path) -> Path:
    """A tiny random EXAONE checkpoint (Megatron format) carrying that tokenizer."""
    from nemo_exaone.checkpoint.hf_to_mcore import convert_hf_to_mcore
    from nemo_exaone.checkpoint.synthetic import write_random_hf_checkpoint
    from nemo_exaone.config.presets import get_preset

    tok = write_tokenizer(root / "tokenizer")
    arch = get_preset("tiny").replace(name="tiny-serve", vocab_size=-(-tok.get_vocab_size() // 64)
                                      * 64, eos_token_id=EOT)
    hf = write_random_hf_checkpoint(root / "hf", arch, seed=1, std=0.2)
    for path in (root / "tokenizer").iterdir():
        (hf / path.name).write_bytes(path.read_bytes())
    convert_hf_to_mcore(hf, root / "ckpt", progress=False)
    return root / "ckpt"
