"""RoPE: our model's inverse frequencies equal transformers' for every preset, and logits agree
with transformers' Llama far beyond llama3's ``original_max_position_embeddings``.

The 24-position parity test in ``test_checkpoint_parity.py`` sees RoPE angles too small to tell
a slightly wrong scaling factor from the right one. Here:

* the inverse frequencies of the RoPE module inside our built model are compared with
  ``transformers.modeling_rope_utils`` (llama3 init for EXAONE 3.5, the default init for 3.0)
  for the real presets' head_dim, theta and scaling: any error in factor or theta fails;
* one forward over 8448 positions (past 8192, llama3's original context, and through its
  low/medium/high frequency bands: head_dim 32 puts frequencies in all three) of a random
  tiny EXAONE 3.5 is compared with transformers' Llama holding the same weights (std 0.2,
  so attention is far from uniform and position errors show). A reference whose factor or
  theta is off by 10% moves the logits by more than 100x the tolerance, which is checked.
"""

from __future__ import annotations

import pytest
import torch

from nemo_exaone.config.presets import PRESET_NAMES, get_preset
from nemo_exaone.runtime.launch import spawn_local

pytestmark = pytest.mark.slow

SEQ = 8448
TOLERANCE = 2e-4
LONG_ARCH = get_preset("tiny").replace(name="tiny-rope", head_dim=32,
                                       max_position_embeddings=32768)
LLAMA_RENAMES = (
    ("transformer.wte.", "model.embed_tokens."), ("transformer.ln_f.", "model.norm."),
    ("transformer.h.", "model.layers."), (".ln_1.", ".input_layernorm."),
    (".ln_2.", ".post_attention_layernorm."), (".attn.attention.", ".self_attn."),
    (".out_proj.", ".o_proj."), (".c_fc_0.", ".gate_proj."), (".c_fc_1.", ".up_proj."),
    (".c_proj.", ".down_proj."),
)


def _rope_arch(preset: str):
    """The preset's RoPE (head_dim, theta, scaling, context) on a one-layer toy body."""
    arch = get_preset(preset)
    heads = 2
    per_layer = {"layer_types": arch.layer_types[:1]} if getattr(arch, "layer_types", None) \
        else {}  # EXAONE 4.0 states an attention kind per layer
    return arch.replace(num_layers=1, num_attention_heads=heads, num_key_value_heads=1,
                        hidden_size=heads * 8, head_dim=arch.head_dim, intermediate_size=16,
                        vocab_size=128, **per_layer)


def _our_frequencies_and_long_logits(hf_dir: str, tokens: torch.Tensor) -> dict:
    from nemo_exaone.checkpoint.hf_weights import load_hf_weights
    from nemo_exaone.config.parallel import ParallelConfig
    from nemo_exaone.model.builder import build_model
    from nemo_exaone.runtime.distributed import destroy_distributed, init_distributed

    init_distributed(ParallelConfig(), seed=0)
    try:
        freqs = {name: build_model(_rope_arch(name)).rotary_pos_emb.inv_freq.clone()
                 for name in PRESET_NAMES}
        model = build_model(LONG_ARCH)
        load_hf_weights([model], hf_dir, LONG_ARCH)
        model.eval()
        positions = torch.arange(tokens.shape[1]).unsqueeze(0)
        with torch.no_grad():
            logits = model(tokens, positions, None)
        return {"inv_freq": freqs, "logits": logits}
    finally:
        destroy_distributed()


def _llama_config(arch, factor_scale: float = 1.0, theta_scale: float = 1.0):
    from transformers import LlamaConfig

    rope = dict(arch.rope_scaling or {"rope_type": "default"})
    rope["rope_theta"] = arch.rope_theta * theta_scale
    if "factor" in rope:
        rope["factor"] = rope["factor"] * factor_scale
    return LlamaConfig(
        vocab_size=arch.vocab_size, hidden_size=arch.hidden_size,
        intermediate_size=arch.intermediate_size, num_hidden_layers=arch.num_layers,
        num_attention_heads=arch.num_attention_heads,
        num_key_value_heads=arch.num_key_value_heads, head_dim=arch.head_dim,
        max_position_embeddings=arch.max_position_embeddings,
        rms_norm_eps=arch.layer_norm_epsilon, rope_parameters=rope,
        tie_word_embeddings=arch.tie_word_embeddings, hidden_act="silu",
        attention_bias=False, mlp_bias=False)


def _reference_inv_freq(arch) -> torch.Tensor:
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    config = _llama_config(arch)
    if arch.rope_scaling is None:
        inv_freq, _ = LlamaRotaryEmbedding.compute_default_rope_parameters(config)
    else:
        inv_freq, _ = ROPE_INIT_FUNCTIONS["llama3"](config, torch.device("cpu"))
    return inv_freq


def _llama_logits(hf_dir: str, tokens: torch.Tensor, **scales: float) -> torch.Tensor:
    from transformers import LlamaForCausalLM

    from nemo_exaone.checkpoint.safetensors_io import SafetensorsSource

    source = SafetensorsSource(hf_dir)
    renamed = {}
    for name, tensor in source.read(source.tensors).items():
        for old, new in LLAMA_RENAMES:
            name = name.replace(old, new)
        renamed[name] = tensor
    llama = LlamaForCausalLM(_llama_config(LONG_ARCH, **scales)).eval()
    missing = llama.load_state_dict(renamed, strict=False).missing_keys
    assert missing == ["lm_head.weight"]  # tied: lm_head is the embedding
    with torch.no_grad():
        return llama(tokens).logits


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    from nemo_exaone.checkpoint.synthetic import write_random_hf_checkpoint

    hf_dir = str(write_random_hf_checkpoint(tmp_path_factory.mktemp("rope_hf"), LONG_ARCH,
                                            seed=11, std=0.2))
    tokens = torch.randint(0, LONG_ARCH.vocab_size, (1, SEQ),
                           generator=torch.Generator().manual_seed(5))
    [ours] = spawn_local(_our_frequencies_and_long_logits, 1, hf_dir, tokens)
    return {"hf_dir": hf_dir, "tokens": tokens, **ours}


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_inverse_frequencies_match_transformers_rope_init(run, preset):
    arch = _rope_arch(preset)
    ours, reference = run["inv_freq"][preset], _reference_inv_freq(arch)
    assert ours.shape == reference.shape == (arch.head_dim // 2,)
    torch.testing.assert_close(ours.double(), reference.double(), rtol=1e-6, atol=0)


def test_long_sequence_logits_match_llama_reference(run):
    reference = _llama_logits(run["hf_dir"], run["tokens"])
    diff = (run["logits"] - reference).abs()
    assert diff.max().item() <= TOLERANCE, diff.max(dim=-1).values.max(dim=0)
    assert diff[:, 8192:].max().item() <= TOLERANCE  # beyond llama3's original context


def test_a_ten_percent_rope_error_moves_the_logits_far_beyond_the_tolerance(run):
    """The case can fail: a reference whose llama3 factor or theta is 10% off differs by
    more than 100x the tolerance already on a 1024-token prefix (about 1e3x and 5e4x
    measured; further out the factor error grows)."""
    prefix = run["tokens"][:, :1024]
    right = _llama_logits(run["hf_dir"], prefix)
    for scales in ({"factor_scale": 1.1}, {"theta_scale": 1.1}):
        wrong = _llama_logits(run["hf_dir"], prefix, **scales)
        assert (wrong - right).abs().max().item() > 100 * TOLERANCE, scales
