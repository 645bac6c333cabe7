"""The Llama-compatible HF export: transformers loads it as ``LlamaForCausalLM`` without remote
code and computes our Megatron model's logits; both sources write the same tensors; EXAONE 4.0
and an --out over the source are refused.

Two random tiny EXAONE 3.5-style models (llama3 RoPE scaling; head_dim 32 puts RoPE
frequencies in all three llama3 bands): one tied with LG's config spelling, one untied with
transformers 5's (``num_hidden_layers``, ``rope_parameters``). Each is imported to Megatron,
run there (one real gloo process) and exported through ``convert mcore-to-hf --arch llama``;
the source HF directory also goes through ``convert hf-to-llama``. A 24-token sequence cannot
show the llama3 scaling in the logits (RoPE is relative), so the rotary inverse frequencies of
transformers' loaded model are compared with those inside our model as well.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nemo_exaone.checkpoint.safetensors_io import SafetensorsSource
from nemo_exaone.cli import main
from nemo_exaone.config.presets import get_preset
from nemo_exaone.runtime.launch import spawn_local

pytestmark = pytest.mark.slow  # one Megatron process

SEQ = 24
SPECIALS = ["[PAD]", "[BOS]", "[UNK]", "[|endofturn|]"]
ARCHS = {
    "tied": get_preset("tiny").replace(name="tiny-tied", head_dim=32, vocab_size=512,
                                       eos_token_id=3, max_position_embeddings=32768),
    "untied": get_preset("tiny").replace(name="tiny-untied", head_dim=32, vocab_size=512,
                                         eos_token_id=3, max_position_embeddings=32768,
                                         tie_word_embeddings=False, num_layers=2),
}
SHARDS = {"tied": "5GB", "untied": "100KB"}  # one file; several shards and an index
CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "hi there"}, {"role": "user", "content": "안녕하세요"}]
EXPECTED_CHAT = ("[|system|]Be brief.[|endofturn|]\n[|user|]hello\n"
                 "[|assistant|]hi there[|endofturn|]\n[|user|]안녕하세요\n[|assistant|]")


def _write_tokenizer(directory: Path) -> None:
    """A byte-level BPE trained here with EXAONE's special tokens and chat template, saved by
    transformers 5 (which puts the template in chat_template.jinja only)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from nemo_exaone.data.chat_format import CHAT_TEMPLATE

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["hello world, the model speaks Korean: 안녕하세요"] * 20, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", bos_token="[BOS]",
                                   unk_token="[UNK]", eos_token="[|endofturn|]")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(directory)


def _transformers5_spelling(config: dict) -> dict:
    """The same EXAONE config as transformers >= 5.24 writes it (Llama names, rope_parameters)."""
    out = dict(config)
    for old, new in (("num_layers", "num_hidden_layers"), ("layer_norm_epsilon", "rms_norm_eps"),
                     ("activation_function", "hidden_act")):
        out[new] = out.pop(old)
    out["rope_parameters"] = dict(out.pop("rope_scaling"), rope_theta=out.pop("rope_theta"))
    return out


def _megatron_side(ckpts: dict[str, str], tokens: torch.Tensor) -> dict:
    """Our model from each Megatron checkpoint: logits and the RoPE inverse frequencies."""
    from nemo_exaone.checkpoint.mcore_checkpoint import load_mcore_checkpoint
    from nemo_exaone.checkpoint.metadata import read_checkpoint_arch
    from nemo_exaone.config.parallel import ParallelConfig
    from nemo_exaone.model.builder import build_model
    from nemo_exaone.runtime.distributed import destroy_distributed, init_distributed

    init_distributed(ParallelConfig(), seed=0)
    out = {}
    try:
        for name, ckpt in ckpts.items():
            arch = read_checkpoint_arch(ckpt)
            model = build_model(arch)
            load_mcore_checkpoint([model], ckpt, arch)
            model.eval()
            positions = torch.arange(tokens.shape[1]).unsqueeze(0)
            with torch.no_grad():
                logits = model(tokens, positions, None)
            out[name] = {"logits": logits, "inv_freq": model.rotary_pos_emb.inv_freq.clone()}
    finally:
        destroy_distributed()
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    from nemo_exaone.checkpoint.hf_to_mcore import convert_hf_to_mcore
    from nemo_exaone.checkpoint.synthetic import write_random_hf_checkpoint

    root = tmp_path_factory.mktemp("llama_export")
    cases = {}
    for k, (name, arch) in enumerate(ARCHS.items()):
        hf = write_random_hf_checkpoint(root / f"hf_{name}", arch, seed=k, std=0.2)
        if name == "untied":
            config = json.loads((hf / "config.json").read_text())
            (hf / "config.json").write_text(json.dumps(_transformers5_spelling(config)))
        _write_tokenizer(hf)
        ckpt = root / f"ckpt_{name}"
        convert_hf_to_mcore(hf, ckpt, progress=False)
        llama = root / f"llama_{name}"
        shards = SHARDS[name]
        assert main(["convert", "mcore-to-hf", "--ckpt", str(ckpt), "--out", str(llama),
                     "--arch", "llama", "--max-shard-size", shards, "--quiet"]) == 0
        cases[name] = {"hf": hf, "ckpt": ckpt, "llama": llama, "shards": shards}
    tokens = torch.randint(0, 512, (2, SEQ), generator=torch.Generator().manual_seed(0))
    [ours] = spawn_local(_megatron_side, 1, {n: str(c["ckpt"]) for n, c in cases.items()},
                         tokens)
    return {"root": root, "cases": cases, "tokens": tokens, "ours": ours}


@pytest.mark.parametrize("name", list(ARCHS))
def test_transformers_loads_the_export_as_llama_with_our_logits(run, name):
    from transformers import AutoModelForCausalLM

    llama = run["cases"][name]["llama"]
    config = json.loads((llama / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["model_type"] == "llama"
    assert "auto_map" not in config and not list(llama.glob("*.py"))
    assert config["attention_bias"] is False and config["mlp_bias"] is False
    assert config["head_dim"] == 32 and config["tie_word_embeddings"] is (name == "tied")
    assert (config["bos_token_id"], config["eos_token_id"], config["pad_token_id"]) == (1, 3, 0)
    model = AutoModelForCausalLM.from_pretrained(llama, dtype=torch.float32).eval()
    assert type(model).__name__ == "LlamaForCausalLM"
    tensors = SafetensorsSource(llama).tensors
    assert "model.layers.0.mlp.gate_proj.weight" in tensors
    if name == "tied":  # no lm_head tensor: transformers ties it to the embedding
        assert "lm_head.weight" not in tensors
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    else:
        assert "lm_head.weight" in tensors
        assert not torch.equal(model.lm_head.weight, model.model.embed_tokens.weight)
    with torch.no_grad():
        reference = model(run["tokens"]).logits
    ours = run["ours"][name]["logits"]
    diff = (ours - reference).abs().max().item()
    print(f"{name}: max |logit diff| Megatron vs transformers Llama export = {diff:.2e}")
    assert ours.shape == reference.shape == (2, SEQ, 512)
    assert diff <= 1e-4


@pytest.mark.parametrize("name", list(ARCHS))
def test_llama3_rope_scaling_reaches_transformers_in_either_spelling(run, name):
    from transformers import AutoModelForCausalLM, LlamaConfig

    llama = run["cases"][name]["llama"]
    config = json.loads((llama / "config.json").read_text())
    scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
    model = AutoModelForCausalLM.from_pretrained(llama, dtype=torch.float32)
    ours = run["ours"][name]["inv_freq"]
    theirs = model.model.rotary_emb.inv_freq
    assert torch.allclose(theirs, ours, rtol=1e-6, atol=0), (theirs, ours)
    unscaled = 1.0 / 1e6 ** (torch.arange(0, 32, 2, dtype=torch.float64) / 32)
    moved = ~torch.isclose(theirs.double(), unscaled, rtol=1e-6, atol=0)
    assert 0 < int(moved.sum()) < len(unscaled)  # llama3 scales the low frequencies only
    assert config["rope_scaling"] == scaling  # transformers 4.x / TRT-LLM / vLLM on 4.x
    assert config["rope_theta"] == 1e6
    assert config["rope_parameters"] == dict(scaling, rope_theta=1e6)  # transformers >= 5
    # Each spelling alone means the same model to transformers 5.
    for drop in (("rope_parameters",), ("rope_scaling", "rope_theta")):
        alone = LlamaConfig(**{k: v for k, v in config.items() if k not in drop})
        assert alone.rope_parameters == dict(scaling, rope_theta=1e6), drop


def test_chat_template_renders_the_exaone_format(run):
    from transformers import AutoTokenizer

    from nemo_exaone.data.chat_format import render_chat

    for case in run["cases"].values():
        llama = case["llama"]
        tok_config = json.loads((llama / "tokenizer_config.json").read_text())
        jinja = (llama / "chat_template.jinja").read_text()
        assert tok_config["chat_template"] == jinja  # transformers 4.4x reads the config entry
        assert "auto_map" not in tok_config
        # transformers 5 saved the source as TokenizersBackend, a name 4.x does not know.
        assert tok_config["tokenizer_class"] == "PreTrainedTokenizerFast"
        text = AutoTokenizer.from_pretrained(llama).apply_chat_template(
            CHAT, tokenize=False, add_generation_prompt=True)
        assert text == EXPECTED_CHAT == render_chat(CHAT, add_generation_prompt=True)
        generation = json.loads((llama / "generation_config.json").read_text())
        assert generation["eos_token_id"] == 3


@pytest.mark.parametrize("name", list(ARCHS))
def test_hf_to_llama_writes_what_the_megatron_path_writes(run, name):
    case = run["cases"][name]
    out = run["root"] / f"from_hf_{name}"
    assert main(["convert", "hf-to-llama", "--hf", str(case["hf"]), "--out", str(out),
                 "--max-shard-size", case["shards"], "--quiet"]) == 0
    files = sorted(p.name for p in case["llama"].iterdir())
    assert sorted(p.name for p in out.iterdir()) == files
    assert (len([f for f in files if f.endswith(".safetensors")]) > 1) == (name == "untied")
    assert ("model.safetensors.index.json" in files) == (name == "untied")
    a, b = SafetensorsSource(case["llama"]), SafetensorsSource(out)
    assert list(a.tensors) == list(b.tensors)
    for tensor in a.tensors:
        x, y = a.read([tensor])[tensor], b.read([tensor])[tensor]
        assert x.dtype == y.dtype and torch.equal(x, y), tensor
    for file in files:
        assert (out / file).read_bytes() == (case["llama"] / file).read_bytes(), file


def test_exaone4_is_refused_naming_what_llama_cannot_express(tmp_path, capsys):
    from nemo_exaone.checkpoint.hf_to_mcore import convert_hf_to_mcore
    from nemo_exaone.checkpoint.synthetic import write_random_hf_checkpoint
    from nemo_exaone.export.llama_hf import LlamaExportError, export_llama_from_hf

    hf = write_random_hf_checkpoint(tmp_path / "hf4", get_preset("tiny4"), seed=0)
    with pytest.raises(LlamaExportError) as refused:
        export_llama_from_hf(hf, tmp_path / "out", progress=False)
    message = str(refused.value)
    for part in ("EXAONE 4.0", "q_norm / k_norm", "post_feedforward_layernorm",
                 "sliding-window attention with RoPE and global attention without RoPE",
                 "3 of its 4 layers", "convert mcore-to-hf --ckpt DIR --out DIR",
                 "tensorrt_llm/_torch/models/modeling_exaone4.py"):
        assert part in message, part
    assert not (tmp_path / "out").exists()
    # The Megatron side refuses it too, before reading any tensor.
    convert_hf_to_mcore(hf, tmp_path / "ckpt4", progress=False)
    code = main(["convert", "mcore-to-hf", "--ckpt", str(tmp_path / "ckpt4"), "--out",
                 str(tmp_path / "out2"), "--arch", "llama", "--quiet"])
    assert code == 2 and "cannot be written as LlamaForCausalLM" in capsys.readouterr().err
    assert not (tmp_path / "out2").exists()


def test_out_over_the_source_is_refused(run, capsys):
    case = run["cases"]["tied"]
    for args in (["hf-to-llama", "--hf", str(case["hf"]), "--out", str(case["hf"])],
                 ["hf-to-llama", "--hf", str(case["hf"]), "--out", str(run["root"])],
                 ["mcore-to-hf", "--arch", "llama", "--ckpt", str(case["ckpt"]),
                  "--out", str(case["ckpt"])]):
        before = sorted(p.name for p in Path(args[args.index("--out") + 1]).iterdir())
        assert main(["convert", *args, "--overwrite", "--quiet"]) == 2
        err = capsys.readouterr().err
        assert "writing it would destroy the input" in err, err
        assert sorted(p.name for p in Path(args[args.index("--out") + 1]).iterdir()) == before


@pytest.mark.parametrize("preset", ["exaone3.0-7.8b", "exaone3.5-2.4b", "exaone3.5-32b"])
def test_every_3x_preset_reads_back_as_the_same_llama(preset):
    """Config only (no weights): transformers 5's LlamaConfig reads our config.json as the
    preset's shapes, tying, token ids and RoPE (3.0: no scaling, theta 5e5)."""
    from transformers import LlamaConfig

    from nemo_exaone.export.llama_hf import llama_config

    arch = get_preset(preset)
    config = LlamaConfig(**llama_config(arch, "bfloat16"))
    assert (config.num_hidden_layers, config.hidden_size, config.intermediate_size,
            config.num_attention_heads, config.num_key_value_heads, config.head_dim,
            config.vocab_size, config.max_position_embeddings, config.rms_norm_eps) == (
        arch.num_layers, arch.hidden_size, arch.intermediate_size, arch.num_attention_heads,
        arch.num_key_value_heads, arch.head_dim, arch.vocab_size,
        arch.max_position_embeddings, arch.layer_norm_epsilon)
    assert config.tie_word_embeddings is bool(arch.tie_word_embeddings)
    assert (config.bos_token_id, config.eos_token_id, config.pad_token_id) == (1, 361, 0)
    rope = dict(config.rope_parameters)
    assert rope.pop("rope_theta") == arch.rope_theta
    assert rope == (arch.rope_scaling or {"rope_type": "default"})


def test_exaone4_12b_refusal_names_the_layer_not_a_window():
    from nemo_exaone.export.llama_hf import LlamaExportError, refuse_unless_llama

    with pytest.raises(LlamaExportError, match="global attention in every layer") as refused:
        refuse_unless_llama(get_preset("exaone4.0-1.2b"), "preset exaone4.0-1.2b")
    assert "q_norm / k_norm" in str(refused.value)


def test_a_tokenizer_without_chat_template_gets_exaones(run, tmp_path):
    """--tokenizer replaces the source's tokenizer; lacking a template it gets EXAONE 3.x's."""
    import shutil

    from transformers import AutoTokenizer

    source = run["cases"]["tied"]["hf"]
    tokenizer = tmp_path / "tokenizer"
    tokenizer.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(source / name, tokenizer / name)
    config = json.loads((tokenizer / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (tokenizer / "tokenizer_config.json").write_text(json.dumps(config))
    out = tmp_path / "out"
    assert main(["convert", "hf-to-llama", "--hf", str(source), "--tokenizer", str(tokenizer),
                 "--out", str(out), "--quiet"]) == 0
    text = AutoTokenizer.from_pretrained(out).apply_chat_template(
        CHAT, tokenize=False, add_generation_prompt=True)
    assert text == EXPECTED_CHAT
