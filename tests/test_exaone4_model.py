"""EXAONE 4.0: presets, config.json reading/writing, layer options, parameter counts, and the
model's logits against transformers' ``Exaone4ForCausalLM`` at TP=1 (one spawned process).

The multi-process parity and round trips are in ``test_exaone4_parity.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from nemo_exaone.config.presets import ExaoneArch, HFConfigError, get_preset
from nemo_exaone.runtime.launch import spawn_local

SLIDING, FULL = "sliding_attention", "full_attention"

# (layers, hidden, heads, kv heads, head_dim, ffn, vocab, context, theta, llama3 factor,
#  window, tied) of the published config.json files.
PUBLISHED = {
    "exaone4.0-1.2b": (30, 2048, 32, 8, 64, 4096, 102400, 65536, 1e6, 16.0, None, True),
    "exaone4.0-32b": (64, 5120, 40, 8, 128, 27392, 102400, 131072, 1e6, 16.0, 4096, False),
}
# Exact counts of the built Megatron model; the HF model on the meta device must agree.
# Without the embedding (and the untied output layer): 1,069,676,288 / 30,954,640,384.
COUNTS = {"exaone4.0-1.2b": 1_279_391_488, "exaone4.0-32b": 32_003_216_384}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_presets_are_the_published_configs(name):
    a = get_preset(name)
    assert (a.num_layers, a.hidden_size, a.num_attention_heads, a.num_key_value_heads,
            a.head_dim, a.intermediate_size, a.vocab_size, a.max_position_embeddings,
            a.rope_theta, a.rope_scaling["factor"], a.sliding_window,
            a.tie_word_embeddings) == PUBLISHED[name]
    assert a.model_type == "exaone4" and a.eos_token_id == 361
    config = a.to_hf_config()
    assert config["architectures"] == ["Exaone4ForCausalLM"]
    if a.sliding_window is None:  # 1.2B: global attention with RoPE everywhere
        assert set(a.layer_types) == {FULL}
    else:  # 32B: "LLLG" from layer 0, the last layer global
        assert config["sliding_window_pattern"] == "LLLG"
        assert a.layer_types == (SLIDING, SLIDING, SLIDING, FULL) * 16
    # transformers reads our config.json as the same model.
    from transformers import Exaone4Config

    theirs = Exaone4Config.from_dict(config)
    assert list(theirs.layer_types) == list(a.layer_types)
    assert (theirs.sliding_window, theirs.head_dim, theirs.num_hidden_layers) == (
        a.sliding_window, a.head_dim, a.num_layers)
    assert theirs.rope_parameters["rope_type"] == "llama3"
    assert theirs.rope_parameters["factor"] == 16.0
    assert theirs.rope_parameters["rope_theta"] == 1e6


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_info_counts_equal_transformers_model(name):
    out = subprocess.run([sys.executable, "-m", "nemo_exaone.cli", "info", name, "--json"],
                         capture_output=True, text=True, check=True, timeout=300)
    info = json.loads(out.stdout)
    assert info["num_parameters"] == COUNTS[name]
    assert info["hf_config"] == get_preset(name).to_hf_config()
    from transformers import Exaone4Config, Exaone4ForCausalLM

    with torch.device("meta"):
        model = Exaone4ForCausalLM(Exaone4Config.from_dict(info["hf_config"]))
    assert sum(p.numel() for p in model.parameters()) == COUNTS[name]


def test_config_roundtrip_and_layer_options():
    from nemo_exaone.model.exaone4 import exaone4_config_kwargs

    big = get_preset("exaone4.0-32b")
    again = ExaoneArch.from_hf_config(big.to_hf_config(), name=big.name)
    assert again == big and again.to_hf_config() == big.to_hf_config()
    kwargs = exaone4_config_kwargs(big)
    # transformers: key k visible to query q iff q - 4096 < k <= q, i.e. 4095 to the left.
    assert kwargs["window_size"] == (4095, 0)
    assert kwargs["window_attn_skip_freq"] == [1, 1, 1, 0] * 16
    assert kwargs["no_rope_freq"] == [0, 0, 0, 1] * 16  # global layers have no RoPE
    assert kwargs["qk_layernorm"] is True
    small = exaone4_config_kwargs(get_preset("exaone4.0-1.2b"))
    assert small == {"qk_layernorm": True}  # no window, RoPE in every layer


@pytest.mark.parametrize("change, message", [
    ({"layer_types": [SLIDING] * 4}, r"layer_types\[3\]='sliding_attention' disagrees with "
                                     "sliding_window_pattern='LLLG'"),
    ({"layer_types": None, "sliding_window_pattern": "LLXG"},
     "sliding_window_pattern='LLXG': expected letters L and G"),
    ({"layer_types": [SLIDING] * 3}, "layer_types has 3 entries but num_layers=4"),
    ({"sliding_window": None, "sliding_window_pattern": None},
     "has 'sliding_attention' layers but sliding_window is null"),
    ({"num_hidden_layers": None}, "missing required field.*num_hidden_layers"),
    ({"attention_bias": True}, "attention_bias=True: EXAONE 4.0 has attention_bias=False"),
    ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "rope_type='yarn'"),
])
def test_bad_exaone4_config_is_refused_naming_the_field(change, message):
    config = {**get_preset("tiny4").to_hf_config(), **change}
    with pytest.raises((HFConfigError, ValueError), match=message):
        ExaoneArch.from_hf_config(config)


@pytest.mark.parametrize("pattern, layers, kinds", [
    (2, 4, "LGLG"), (4, 6, "LLLGLL"), ("LLLG", 6, "LLLGLG"), ("LLLG", 64, "LLLG" * 16),
    ("LG", 3, "LGG"), (None, 3, "GGG"),
])
def test_pattern_without_layer_types_expands_as_the_implementations_do(pattern, layers, kinds):
    """Letters repeat from layer 0 with the last layer global (TensorRT-LLM), an integer n
    makes every n-th layer global (transformers); the configs as first published had no
    layer_types."""
    config = get_preset("tiny4").to_hf_config()
    del config["layer_types"]
    config.update(sliding_window_pattern=pattern, num_hidden_layers=layers)
    want = tuple(SLIDING if c == "L" else FULL for c in kinds)
    assert ExaoneArch.from_hf_config(config).layer_types == want


def test_family_fields_on_a_3x_model_are_refused():
    with pytest.raises(ValueError, match="only model_type='exaone4'"):
        get_preset("tiny").replace(sliding_window=16)


# ----------------------------------------------------------------------------- logits
_LLLG = (SLIDING,) * 3 + (FULL,)
CASES = {
    "hybrid-untied": get_preset("tiny4"),
    "global-tied": get_preset("tiny4").replace(
        sliding_window=None, layer_types=(FULL,) * 4, tie_word_embeddings=True,
        hf_extra={"sliding_window_pattern": None}),
    # A window of one token: each sliding layer sees only itself.
    "hybrid-window1": get_preset("tiny4").replace(sliding_window=1, head_dim=32),
}
SEQ = 40  # longer than every window above
# Prompts of two lengths; prompt + new tokens run past tiny4's window of 16.
PROMPTS = [[5, 17, 300, 41, 9, 1000, 7, 77, 12, 3, 450, 8], list(range(100, 120))]
NEW_TOKENS = 24


def _tp1_logits(cases: dict, tokens: torch.Tensor) -> dict:
    from nemo_exaone.checkpoint.hf_weights import load_hf_weights
    from nemo_exaone.config.parallel import ParallelConfig
    from nemo_exaone.model.builder import build_model
    from nemo_exaone.runtime.distributed import destroy_distributed, init_distributed

    init_distributed(ParallelConfig(), seed=0)
    out = {}
    positions = torch.arange(tokens.shape[1]).unsqueeze(0).expand(tokens.shape[0], -1)
    for name, (arch, hf_dir) in cases.items():
        model = build_model(arch)
        load_hf_weights([model], hf_dir, arch)
        model.eval()
        with torch.no_grad():
            out[name] = model(tokens, positions, None)
        if name == "hybrid-untied":  # greedy decoding past the window, through the KV cache
            from nemo_exaone.inference.generation import GenerationConfig, generate

            results = generate([model], PROMPTS, GenerationConfig(max_new_tokens=NEW_TOKENS))
            out["generated"] = [r.token_ids for r in results]
    destroy_distributed()
    return out


@pytest.fixture(scope="module")
def logits(tmp_path_factory) -> dict:
    from transformers import Exaone4ForCausalLM

    from nemo_exaone.checkpoint.synthetic import write_random_hf_checkpoint

    root = tmp_path_factory.mktemp("exaone4_tp1")
    tokens = torch.randint(0, 2048, (2, SEQ), generator=torch.Generator().manual_seed(1))
    cases, references = {}, {}
    for k, (name, arch) in enumerate(CASES.items()):
        hf = write_random_hf_checkpoint(root / name, arch, torch.float32, seed=k, std=0.08)
        cases[name] = (arch, str(hf))
        model = Exaone4ForCausalLM.from_pretrained(hf, dtype=torch.float32,
                                                   attn_implementation="eager").eval()
        with torch.no_grad():
            references[name] = model(tokens).logits
        if name == "hybrid-untied":
            references["generated"] = []
            for prompt in PROMPTS:
                with torch.no_grad():
                    ids = model.generate(torch.tensor([prompt]), max_new_tokens=NEW_TOKENS,
                                         min_new_tokens=NEW_TOKENS, do_sample=False,
                                         eos_token_id=None, pad_token_id=0)
                references["generated"].append(ids[0, len(prompt):].tolist())
    ours = spawn_local(_tp1_logits, 1, cases, tokens)[0]
    return {name: (ours[name], references[name]) for name in [*CASES, "generated"]}


@pytest.mark.parametrize("name", list(CASES))
def test_tp1_logits_match_transformers_exaone4(logits, name):
    ours, reference = logits[name]
    diff = (ours - reference).abs().max().item()
    print(f"{name}: max |logit diff| = {diff:.2e}")
    assert ours.shape == reference.shape == (2, SEQ, 2048)
    assert diff <= 1e-4


def test_megatron_bridge_plugin_refuses_exaone4():
    """The Bridge plug-in builds a 3.x (pre-norm) provider; for 4.0 it must refuse, naming
    what it cannot express, not build another model."""
    from nemo_exaone.checkpoint.megatron_bridge import bridge_provider_kwargs

    with pytest.raises(ValueError, match="model_type='exaone4'.*post-norm, QK-norm"):
        bridge_provider_kwargs(get_preset("exaone4.0-32b").to_hf_config())


@pytest.mark.parametrize("seq", [10, 16, 40])
def test_attention_flops_count_the_keys_each_layer_sees(seq):
    """MFU's attention FLOPs of a hybrid model equal a count of the keys each query may see,
    read off the same masks transformers builds (window 16; sequences shorter, equal, longer)."""
    from nemo_exaone.training.flops import flops_per_token

    arch = get_preset("tiny4")
    q, k = torch.arange(seq).unsqueeze(1), torch.arange(seq).unsqueeze(0)
    causal = k <= q
    band = causal & (k > q - arch.sliding_window)
    keys = sum(int((band if kind == SLIDING else causal).sum()) for kind in arch.layer_types)
    width = arch.num_attention_heads * arch.head_dim
    got = flops_per_token(arch, seq).attention_scores
    assert got == pytest.approx(2 * 2 * width * keys / seq, rel=1e-12)


def test_greedy_generation_equals_transformers(logits):
    """Megatron-Core's static inference engine (KV cache, one-token decode steps) on the
    hybrid model generates transformers' greedy tokens past the sliding window."""
    ours, reference = logits["generated"]
    assert [len(t) for t in reference] == [NEW_TOKENS] * len(PROMPTS)
    assert ours == reference


def test_a_stale_carried_pattern_is_refused():
    """TensorRT-LLM reads sliding_window_pattern, transformers layer_types: changing one
    without the other would export a config the two read differently."""
    with pytest.raises(ValueError, match=r"layer_types\[3\]='sliding_attention' disagrees"):
        get_preset("tiny4").replace(layer_types=(SLIDING,) * 4)


@pytest.mark.parametrize("name", ["exaone4.0-1.2b", "exaone4.0-32b", "tiny4"])
def test_preset_table_rows_are_written_back_verbatim(name):
    """The table row is the config.json; reading and writing it changes nothing."""
    from nemo_exaone.config.presets import PRESET_TABLE

    published = PRESET_TABLE[name]
    assert get_preset(name).to_hf_config() == dict(sorted(published.items()))
    assert "auto_map" not in published  # native in transformers: no remote code
