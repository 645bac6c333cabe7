"""The journey in miniature: a tiny EXAONE saved by transformers 5 with a trained tokenizer and a
chat template -> import -> continued pretraining (architecture taken from the checkpoint, context
doubled) -> export -> AutoTokenizer + apply_chat_template + greedy generate in transformers;
every config field equal to the source except the one the run changed (listed in the report).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_hf_identity import write_tokenizer

from nemo_exaone.runtime.launch import spawn_local

ROOT = Path(__file__).resolve().parents[1]
SCALING = {"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
           "original_max_position_embeddings": 8192, "rope_type": "llama3"}


def _compose(overrides: list[str]):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from nemo_exaone.commands.hydra_app import job_config, register_configs

    GlobalHydra.instance().clear()
    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "nemo_exaone" / "conf"),
                               version_base="1.3"):
        return job_config(compose(config_name="tiny_cpu", overrides=overrides))


def _train(cfg) -> dict:
    from nemo_exaone.training.loop import train

    result = train(cfg)
    return {"losses": [m["loss"] for m in result.metrics],
            "checkpoint": str(result.last_checkpoint)}


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A tiny EXAONE as transformers 5 saves it (native ExaoneConfig), with our tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, ExaoneConfig

    src = tmp_path_factory.mktemp("journey") / "hf"
    src.mkdir()
    write_tokenizer(src, vocab_size=300)
    tok = AutoTokenizer.from_pretrained(src)
    config = ExaoneConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=176, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        tie_word_embeddings=True, rope_parameters={**SCALING, "rope_theta": 1000000.0},
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(src)
    return src


def test_import_train_export_chat(source, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from nemo_exaone.checkpoint.hf_to_mcore import convert_hf_to_mcore
    from nemo_exaone.checkpoint.mcore_to_hf import convert_mcore_to_hf

    mcore, run, out = tmp_path / "mcore", tmp_path / "run", tmp_path / "out"
    convert_hf_to_mcore(source, mcore, progress=False)
    cfg = _compose([
        "model=from_checkpoint", f"init.checkpoint={mcore}", "init.load=weights",
        "+model.arch.max_position_embeddings=512", "data=synthetic", f"run.dir={run}",
        "train.max_steps=3", "train.seq_length=32", "train.micro_batch_size=2",
        "train.global_batch_size=2", "schedule.warmup_steps=0", "checkpoint.save_interval=0",
        "checkpoint.async_save=false", "logging.progress=none", "logging.tensorboard=false"])
    [trained] = spawn_local(_train, 1, cfg)
    assert len(trained["losses"]) == 3
    ckpt = Path(trained["checkpoint"])
    assert (ckpt / "hf_identity" / "chat_template.jinja").is_file()  # carried by training

    report = convert_mcore_to_hf(ckpt, out, progress=False)
    source_config = json.loads((source / "config.json").read_text())
    exported = json.loads((out / "config.json").read_text())
    assert exported == {**source_config, "max_position_embeddings": 512}
    assert ("config.json fields changed against the imported source: "
            "max_position_embeddings: 256 -> 512") in report.summary()
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
                 "generation_config.json"):
        assert (out / name).read_bytes() == (source / name).read_bytes(), name

    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert model.config.rope_parameters["rope_theta"] == 1000000.0
    assert model.config.rope_parameters["rope_type"] == "llama3"
    ids = tok.apply_chat_template([{"role": "user", "content": "hello world"}],
                                  add_generation_prompt=True, return_tensors="pt",
                                  return_dict=True)["input_ids"]
    assert tok.decode(ids[0]) == "[|user|]hello world\n[|assistant|]"
    with torch.no_grad():
        generated = model.generate(ids, max_new_tokens=4, do_sample=False)
    assert generated.shape[1] > ids.shape[1]
    # trained: the exported weights are not the source's
    original = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    assert not torch.equal(original.model.layers[0].mlp.up_proj.weight,
                           model.model.layers[0].mlp.up_proj.weight)


def test_explicit_preset_that_differs_from_the_checkpoint_is_refused(source, tmp_path):
    from nemo_exaone.checkpoint.hf_to_mcore import convert_hf_to_mcore
    from nemo_exaone.config.errors import ConfigError

    convert_hf_to_mcore(source, tmp_path / "mcore", progress=False)
    cfg = _compose(["model=tiny", f"init.checkpoint={tmp_path / 'mcore'}",
                    "+model.arch.max_position_embeddings=512"])
    with pytest.raises(ConfigError) as caught:
        cfg.model.build_arch(cfg.init.checkpoint)
    message = str(caught.value)
    for name in ("num_layers", "vocab_size", "eos_token_id"):
        assert f"{name}: preset 'tiny' has" in message, name
    assert "max_position_embeddings" not in message  # overridden on purpose
    assert "hidden_size" not in message and "rope_theta" not in message  # these agree
    assert "model.preset=from_checkpoint" in message
    taken = _compose(["model=from_checkpoint", f"init.checkpoint={tmp_path / 'mcore'}"])
    arch = taken.model.build_arch(taken.init.checkpoint)
    assert (arch.num_layers, arch.vocab_size, arch.rope_theta) == (2, arch.vocab_size, 1e6)
    assert arch.rope_scaling == SCALING and arch.tie_word_embeddings is True


def test_a_run_from_a_preset_carries_its_own_tokenizer_to_the_export(tmp_path):
    from transformers import AutoTokenizer

    from nemo_exaone.checkpoint.mcore_to_hf import convert_mcore_to_hf

    cfg = _compose([
        f"run.dir={tmp_path / 'run'}", f"data.prepare_dir={tmp_path / 'data'}",
        "train.max_steps=1", "train.seq_length=32", "train.micro_batch_size=2",
        "train.global_batch_size=2", "schedule.warmup_steps=0", "checkpoint.save_interval=0",
        "checkpoint.async_save=false", "logging.progress=none", "logging.tensorboard=false"])
    [trained] = spawn_local(_train, 1, cfg)
    report = convert_mcore_to_hf(trained["checkpoint"], tmp_path / "out", progress=False)
    assert "no tokenizer files" not in report.summary()
    tok = AutoTokenizer.from_pretrained(tmp_path / "out")
    assert len(tok) == 2048 and tok.decode(tok("안녕 hello")["input_ids"]).endswith("hello")
