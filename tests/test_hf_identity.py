"""An HF checkpoint keeps its identity through import and export.

Import records config.json, generation_config.json, every tokenizer file (chat_template.jinja
included) and LG's remote code in the checkpoint; export writes them back, states
``tie_word_embeddings`` (transformers 5 reads its absence as false) and keeps ``auto_map`` only
when the files it points at are there. transformers 5 then loads the export natively.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from nemo_exaone.checkpoint.hf_to_mcore import convert_hf_to_mcore
from nemo_exaone.checkpoint.mcore_to_hf import convert_mcore_to_hf
from nemo_exaone.checkpoint.safetensors_io import SafetensorsSource
from nemo_exaone.checkpoint.synthetic import write_random_hf_checkpoint
from nemo_exaone.config.presets import LG_AUTO_MAP, ExaoneArch

CHAT_TEMPLATE = ("{% for m in messages %}[|{{ m['role'] }}|]{{ m['content'] }}"
                 "{% if m['role'] == 'user' %}{{ '\\n' }}{% else %}[|endofturn|]{{ '\\n' }}"
                 "{% endif %}{% endfor %}"
                 "{% if add_generation_prompt %}[|assistant|]{% endif %}")
SCALING = {"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
           "original_max_position_embeddings": 8192, "rope_type": "llama3"}
# As LG's class writes a tied model: no tie_word_embeddings key; remote code in auto_map.
LG_CONFIG = {
    "activation_function": "silu", "architectures": ["ExaoneForCausalLM"],
    "attention_dropout": 0.0, "auto_map": LG_AUTO_MAP, "bos_token_id": 1, "embed_dropout": 0.0,
    "eos_token_id": 3, "hidden_size": 64, "initializer_range": 0.02, "intermediate_size": 176,
    "layer_norm_epsilon": 1e-05, "max_position_embeddings": 16384, "model_type": "exaone",
    "num_attention_heads": 4, "num_key_value_heads": 2, "num_layers": 2, "pad_token_id": 0,
    "rope_scaling": SCALING, "rope_theta": 1000000.0, "torch_dtype": "float32",
    "transformers_version": "4.43.1", "use_cache": True, "vocab_size": 256,
}
REMOTE_CODE = {"configuration_exaone.py": "# LG's configuration (stand-in)\n",
               "modeling_exaone.py": "# LG's modeling (stand-in)\n"}


def write_tokenizer(directory: Path, vocab_size: int = 256) -> list[str]:
    """A byte-level BPE tokenizer trained here, with EXAONE's special tokens and a chat
    template, saved by transformers (so every file it writes is there)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["[PAD]", "[BOS]", "[UNK]", "[|endofturn|]"]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["hello world, the model speaks Korean: 안녕하세요"] * 20, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", bos_token="[BOS]",
                                   unk_token="[UNK]", eos_token="[|endofturn|]")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(directory)
    return sorted(p.name for p in directory.iterdir())


@pytest.fixture(scope="module")
def lg_source(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("identity")
    arch = ExaoneArch.from_hf_config(LG_CONFIG)
    hf = write_random_hf_checkpoint(root / "hf", arch, seed=3)
    (hf / "config.json").write_text(json.dumps(LG_CONFIG, indent=2))
    for name, text in REMOTE_CODE.items():
        (hf / name).write_text(text)
    (hf / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": 1, "eos_token_id": 3, "pad_token_id": 0, "do_sample": False}))
    write_tokenizer(hf)
    return hf


def test_import_records_identity_and_export_writes_it_back(lg_source, tmp_path):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    mcore, out = tmp_path / "mcore", tmp_path / "out"
    imported = convert_hf_to_mcore(lg_source, mcore, progress=False)
    assert "RoPE theta=1e+06, llama3 scaling factor=8" in imported.summary()
    assert "tie_word_embeddings absent: tied" in imported.summary()
    recorded = sorted(p.name for p in (mcore / "hf_identity").iterdir())
    for name in ("config.json", "generation_config.json", "chat_template.jinja",
                 "tokenizer.json", "tokenizer_config.json", *REMOTE_CODE):
        assert name in recorded, name
    # The source may go away: export needs only the checkpoint.
    moved = tmp_path / "gone"
    shutil.move(lg_source, moved)
    try:
        report = convert_mcore_to_hf(mcore, out, progress=False)
    finally:
        shutil.move(moved, lg_source)
    for name in recorded:
        if name != "config.json":
            assert (out / name).read_bytes() == (lg_source / name).read_bytes(), name
    config = json.loads((out / "config.json").read_text())
    assert config == {**LG_CONFIG, "tie_word_embeddings": True}
    assert "tie_word_embeddings: added True" in report.summary()
    assert "RoPE theta=1e+06, llama3 scaling factor=8" in report.summary()

    # transformers >= 5, natively (no remote code): the same model, tied, llama3 RoPE.
    hf_config = AutoConfig.from_pretrained(out)
    assert hf_config.tie_word_embeddings is True
    assert hf_config.rope_parameters["rope_type"] == "llama3"
    assert hf_config.rope_parameters["rope_theta"] == 1000000.0
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    source = SafetensorsSource(lg_source)
    wte = source.read(["transformer.wte.weight"])["transformer.wte.weight"]
    assert torch.equal(model.get_input_embeddings().weight, wte)
    assert torch.equal(model.get_output_embeddings().weight, wte)
    tok = AutoTokenizer.from_pretrained(out)
    text = tok.apply_chat_template([{"role": "user", "content": "hello"}], tokenize=False,
                                   add_generation_prompt=True)
    assert text == "[|user|]hello\n[|assistant|]"


def test_auto_map_is_dropped_when_the_remote_code_is_not_there(lg_source, tmp_path):
    hf = tmp_path / "hf"
    shutil.copytree(lg_source, hf, ignore=shutil.ignore_patterns("*.py"))
    convert_hf_to_mcore(hf, tmp_path / "mcore", progress=False)
    report = convert_mcore_to_hf(tmp_path / "mcore", tmp_path / "out", progress=False)
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert "auto_map" not in config and not list((tmp_path / "out").glob("*.py"))
    assert "auto_map: dropped" in report.summary()
    assert "auto_map: removed" in report.summary()
