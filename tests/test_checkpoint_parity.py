"""Parity with an independent implementation and bit-exact round trips.

Two random tiny EXAONE checkpoints in HF format (3.0-style: no RoPE scaling, untied, sharded;
3.5-style: llama3 RoPE scaling, tied, head_dim != hidden/heads, single file) are converted to
Megatron checkpoints, loaded by the training code at TP=2/PP=2 (4 real gloo processes) and at
TP=1, and their logits compared with transformers' LlamaForCausalLM loaded with the same
weights under Llama names (EXAONE 3.x is Llama with other names). The TP=2/PP=2 model is then
saved and exported back to HF: every tensor must be bit-identical, config.json equal.

Everything expensive happens once, in a module fixture: one single-process conversion run and
one 4-process run that also exports the round-trip checkpoints.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from nemo_exaone.checkpoint.safetensors_io import SafetensorsSource
from nemo_exaone.checkpoint.synthetic import write_random_hf_checkpoint
from nemo_exaone.config.presets import ExaoneArch, get_preset
from nemo_exaone.runtime.launch import spawn_local

pytestmark = pytest.mark.slow

ARCHS = {
    "exaone3.0-style": get_preset("tiny").replace(
        name="tiny-3.0", tie_word_embeddings=False, rope_scaling=None, rope_theta=500000.0,
        max_position_embeddings=4096),
    # head_dim 32 puts some RoPE frequencies inside llama3's smoothed band.
    "exaone3.5-style": get_preset("tiny").replace(
        name="tiny-3.5", head_dim=32, max_position_embeddings=32768),
}
BATCH, SEQ = 2, 24
LAYOUTS = ((2, 2), (1, 1))
TOKENIZER_FILES = {"tokenizer.json": '{"version": "1.0"}', "tokenizer_config.json": "{}"}

# EXAONE 3.x -> Llama parameter names (LG's own rename).
LLAMA_RENAMES = (
    ("transformer.wte.", "model.embed_tokens."), ("transformer.ln_f.", "model.norm."),
    ("transformer.h.", "model.layers."), (".ln_1.", ".input_layernorm."),
    (".ln_2.", ".post_attention_layernorm."), (".attn.attention.", ".self_attn."),
    (".out_proj.", ".o_proj."), (".c_fc_0.", ".gate_proj."), (".c_fc_1.", ".up_proj."),
    (".c_proj.", ".down_proj."),
)


# ----------------------------------------------------------------------------- workers
def _convert_all(jobs: list[dict]) -> tuple[list[dict], dict]:
    """HF -> Megatron for every case, plus a bf16 streaming round trip (one process); and
    Megatron's own checkpoint layout of every preset (meta device) against the table."""
    from nemo_exaone.checkpoint.exaone4_hf import hf_table
    from nemo_exaone.checkpoint.exaone_hf import exaone_dims
    from nemo_exaone.checkpoint.hf_to_mcore import convert_hf_to_mcore
    from nemo_exaone.checkpoint.mcore_layout import check_layout_covers, megatron_layout
    from nemo_exaone.checkpoint.mcore_to_hf import convert_mcore_to_hf
    from nemo_exaone.config.presets import PRESET_NAMES

    layouts = {}
    for preset in PRESET_NAMES:
        arch = get_preset(preset)
        table = hf_table(arch)  # EXAONE 3.x or 4.0 layout, by model_type
        layout = megatron_layout(arch, table)
        check_layout_covers(layout, [b.megatron for b in table.bind(exaone_dims(arch))])
        layouts[preset] = {c.key: c.global_shape for c in layout.chunks}
    reports = []
    for job in jobs:
        reports.append(convert_hf_to_mcore(job["hf"], job["ckpt"], tensor_parallel=2,
                                           pipeline_parallel=2, progress=False).__dict__)
        if job.get("back"):
            convert_mcore_to_hf(job["ckpt"], job["back"], max_shard_size=job["shard"],
                                progress=False)
    return reports, layouts


def _logits(chunks: list, tokens: torch.Tensor) -> torch.Tensor | None:
    """Full-vocabulary logits on the last pipeline stage (None elsewhere)."""
    from megatron.core import parallel_state as ps
    from megatron.core.pipeline_parallel import get_forward_backward_func

    batch, seq = tokens.shape
    positions = torch.arange(seq).unsqueeze(0).expand(batch, -1).contiguous()

    def step(iterator, model):
        output = model(next(iterator), positions, None)
        return output, lambda out: (out.sum() * 0, {"logits": out.detach().clone()})

    iterators = [iter([tokens]) for _ in chunks]
    with torch.no_grad():
        collected = get_forward_backward_func()(
            forward_step_func=step, data_iterator=iterators if len(chunks) > 1 else iterators[0],
            model=chunks, num_microbatches=1, seq_length=seq, micro_batch_size=batch,
            forward_only=True)
    if not ps.is_pipeline_last_stage(ignore_virtual=True):
        return None
    logits = collected[0]["logits"]  # [b, s, vocab / tp]
    parts = [torch.empty_like(logits) for _ in range(ps.get_tensor_model_parallel_world_size())]
    torch.distributed.all_gather(parts, logits.contiguous(),
                                 group=ps.get_tensor_model_parallel_group())
    return torch.cat(parts, dim=-1)


def _parity_worker(cases: dict, tokens: torch.Tensor) -> dict:
    """Load each converted checkpoint in every layout, forward, save at TP=2/PP=2; rank 0
    then exports the saved checkpoints to HF."""
    from megatron.core import parallel_state as ps

    from nemo_exaone.checkpoint.errors import CheckpointError
    from nemo_exaone.checkpoint.hf_weights import load_hf_weights
    from nemo_exaone.checkpoint.mcore_checkpoint import (
        load_mcore_checkpoint,
        save_mcore_checkpoint,
    )
    from nemo_exaone.checkpoint.mcore_to_hf import convert_mcore_to_hf
    from nemo_exaone.checkpoint.metadata import read_checkpoint_arch
    from nemo_exaone.config.parallel import ParallelConfig
    from nemo_exaone.model.builder import build_model_chunks
    from nemo_exaone.runtime.distributed import destroy_distributed, init_distributed

    out: dict = {}
    for name, case in cases.items():
        arch = read_checkpoint_arch(case["ckpt"])  # how a later stage rebuilds the model
        for tp, pp in LAYOUTS:
            parallel = ParallelConfig(tensor_model_parallel_size=tp,
                                      pipeline_model_parallel_size=pp)
            init_distributed(parallel, seed=0)
            chunks = build_model_chunks(arch, parallel)
            load_mcore_checkpoint(chunks, case["ckpt"], arch)
            out[(name, tp, pp)] = _logits(chunks, tokens)
            if (tp, pp) == (2, 2):
                save_mcore_checkpoint(chunks, case["saved"], arch, hf_source_dir=case["hf"])
                fresh = build_model_chunks(arch, parallel)
                load_hf_weights(fresh, case["hf"], arch)
                out[(name, "hf_weights")] = _logits(fresh, tokens)
            ps.destroy_model_parallel()
    # A model of another architecture must be refused, naming the fields.
    init_distributed(ParallelConfig(), seed=0)
    wrong = ExaoneArch.from_hf_config(cases["exaone3.0-style"]["config"]).replace(
        intermediate_size=128)
    try:
        load_mcore_checkpoint(build_model_chunks(wrong), cases["exaone3.0-style"]["ckpt"])
    except CheckpointError as exc:
        out["refusal"] = str(exc)
    destroy_distributed()
    if int(os.environ["RANK"]) == 0:
        for case in cases.values():
            convert_mcore_to_hf(case["saved"], case["exported"], max_shard_size=case["shard"],
                                progress=False)
    return out


# ----------------------------------------------------------------------------- fixture
@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("checkpoint_parity")
    cases, jobs = {}, []
    for k, (name, arch) in enumerate(ARCHS.items()):
        shard = 400_000 if arch.rope_scaling is None else 10**9  # sharded + single file
        hf = write_random_hf_checkpoint(root / f"hf{k}", arch, torch.float32, seed=k,
                                        std=0.08, max_shard_bytes=shard)
        if arch.rope_scaling is not None:
            for file, text in TOKENIZER_FILES.items():
                (hf / file).write_text(text)
        cases[name] = dict(config=arch.to_hf_config(), hf=str(hf), ckpt=str(root / f"mc{k}"),
                           saved=str(root / f"tp2pp2_{k}"), exported=str(root / f"back{k}"),
                           shard=shard)
        jobs.append(dict(hf=str(hf), ckpt=str(root / f"mc{k}")))
    bf16 = write_random_hf_checkpoint(root / "hf_bf16", ARCHS["exaone3.5-style"],
                                      torch.bfloat16, seed=7, max_shard_bytes=150_000)
    jobs.append(dict(hf=str(bf16), ckpt=str(root / "mc_bf16"), back=str(root / "back_bf16"),
                     shard=150_000))
    tokens = torch.randint(0, 2048, (BATCH, SEQ), generator=torch.Generator().manual_seed(0))
    reports, layouts = spawn_local(_convert_all, 1, jobs)[0]
    ranks = spawn_local(_parity_worker, 4, cases, tokens)
    merged: dict = {}
    for rank_out in ranks:
        merged.update({k: v for k, v in rank_out.items() if v is not None})
    return dict(cases=cases, tokens=tokens, results=merged, reports=reports, layouts=layouts,
                bf16=(bf16, root / "back_bf16"))


def _llama_logits(hf_dir: str, tokens: torch.Tensor) -> torch.Tensor:
    """The independent reference: transformers' Llama with the same weights, renamed."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = json.loads((Path(hf_dir) / "config.json").read_text())
    source = SafetensorsSource(hf_dir)
    weights = source.read(source.tensors)
    renamed = {}
    for name, tensor in weights.items():
        for old, new in LLAMA_RENAMES:
            name = name.replace(old, new)
        renamed[name] = tensor
    rope = dict(config["rope_scaling"] or {"rope_type": "default"})
    rope["rope_theta"] = config["rope_theta"]
    llama = LlamaForCausalLM(LlamaConfig(
        vocab_size=config["vocab_size"], hidden_size=config["hidden_size"],
        intermediate_size=config["intermediate_size"], num_hidden_layers=config["num_layers"],
        num_attention_heads=config["num_attention_heads"],
        num_key_value_heads=config["num_key_value_heads"], head_dim=config.get("head_dim"),
        max_position_embeddings=config["max_position_embeddings"],
        rms_norm_eps=config["layer_norm_epsilon"], rope_parameters=rope,
        tie_word_embeddings=config["tie_word_embeddings"], hidden_act="silu",
        attention_bias=False, mlp_bias=False)).eval()
    result = llama.load_state_dict(renamed, strict=False)
    assert not result.unexpected_keys
    assert result.missing_keys == (["lm_head.weight"] if config["tie_word_embeddings"] else [])
    if config["tie_word_embeddings"]:
        assert llama.lm_head.weight.data_ptr() == llama.model.embed_tokens.weight.data_ptr()
    with torch.no_grad():
        return llama(tokens).logits


# ----------------------------------------------------------------------------- tests
@pytest.mark.parametrize("name", list(ARCHS))
@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda x: f"tp{x[0]}pp{x[1]}")
def test_logits_match_llama_reference(run, name, layout):
    reference = _llama_logits(run["cases"][name]["hf"], run["tokens"])
    ours = run["results"][(name, *layout)]
    assert ours.shape == reference.shape == (BATCH, SEQ, 2048)
    diff = (ours - reference).abs().max().item()
    print(f"{name} TP={layout[0]} PP={layout[1]}: max |logit diff| = {diff:.2e}")
    assert diff <= 1e-4
    assert torch.equal(ours.argmax(-1), reference.argmax(-1))


@pytest.mark.parametrize("name", list(ARCHS))
def test_hf_weights_loader_matches_checkpoint_path(run, name):
    assert torch.equal(run["results"][(name, "hf_weights")], run["results"][(name, 2, 2)])


def _assert_same_hf_checkpoint(original: Path, exported: Path) -> None:
    files = sorted(p.name for p in original.iterdir() if p.name.endswith((".safetensors",
                                                                           ".json")))
    assert sorted(p.name for p in exported.iterdir()
                  if p.name.endswith((".safetensors", ".json"))) == files
    assert json.loads((exported / "config.json").read_text()) == \
        json.loads((original / "config.json").read_text())
    a, b = SafetensorsSource(original), SafetensorsSource(exported)
    assert list(a.tensors) == list(b.tensors)
    for name in a.tensors:
        x, y = a.read([name])[name], b.read([name])[name]
        assert x.dtype == y.dtype and x.shape == y.shape, name
        assert torch.equal(x.view(torch.uint8), y.view(torch.uint8)), name


@pytest.mark.parametrize("name", list(ARCHS))
def test_roundtrip_through_tp2_pp2_is_bit_identical(run, name):
    case = run["cases"][name]
    _assert_same_hf_checkpoint(Path(case["hf"]), Path(case["exported"]))
    tied = ARCHS[name].tie_word_embeddings
    exported = SafetensorsSource(case["exported"]).tensors
    assert ("lm_head.weight" in exported) == (not tied)
    if ARCHS[name].rope_scaling is not None:  # tokenizer files found via the recorded source
        for file, text in TOKENIZER_FILES.items():
            assert (Path(case["exported"]) / file).read_text() == text


def test_bf16_streaming_roundtrip_is_bit_identical(run):
    original, exported = run["bf16"]
    _assert_same_hf_checkpoint(original, exported)
    assert len(list(original.glob("*.safetensors"))) > 2  # really sharded


def test_checkpoint_of_another_architecture_is_refused(run):
    message = run["results"]["refusal"]
    assert "intermediate_size: model has 128, checkpoint has 176" in message


def test_converted_checkpoint_records_architecture(run):
    from nemo_exaone.checkpoint.metadata import read_checkpoint_arch, read_metadata

    for case in run["cases"].values():
        hf_config = json.loads((Path(case["hf"]) / "config.json").read_text())
        assert read_checkpoint_arch(case["ckpt"]).to_hf_config() == hf_config
        metadata = read_metadata(case["ckpt"])
        assert metadata.writer == "hf-to-mcore" and metadata.dtype == "float32"
        assert metadata.hf_source_dir == case["hf"]
    assert all(r["tensors"] > 0 for r in run["reports"])


def test_megatron_layout_of_every_preset_matches_the_table(run):
    """Stacked-layer keys with TP/PP-agnostic global shapes, e.g. EXAONE 3.5 32B."""
    big = run["layouts"]["exaone3.5-32b"]
    assert big["decoder.layers.self_attention.linear_qkv.weight"] == (64, 5120 + 2 * 1024, 5120)
    assert big["decoder.layers.mlp.linear_fc1.weight"] == (64, 2 * 27392, 5120)
    assert big["decoder.layers.self_attention.linear_qkv.layer_norm_weight"] == (64, 5120)
    assert big["output_layer.weight"] == (102400, 5120)
    assert "output_layer.weight" not in run["layouts"]["exaone3.5-2.4b"]  # tied
    big4 = run["layouts"]["exaone4.0-32b"]  # post-norm and per-head QK-norm weights
    assert big4["decoder.layers.self_attention.linear_proj.post_layernorm.weight"] == (64, 5120)
    assert big4["decoder.layers.mlp.linear_fc2.post_layernorm.weight"] == (64, 5120)
    assert big4["decoder.layers.self_attention.q_layernorm.weight"] == (64, 128)
    assert "decoder.layers.self_attention.linear_qkv.layer_norm_weight" not in big4  # no pre-norm
    assert "output_layer.weight" not in run["layouts"]["exaone4.0-1.2b"]  # tied
