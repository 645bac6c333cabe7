"""EXAONE 4.0 against transformers' own ``Exaone4ForCausalLM``, and bit-exact round trips.

Random tiny EXAONE 4.0 checkpoints in HF format (hybrid "LLLG" untied with a window shorter
than the sequence; all-global tied with RoPE everywhere; hybrid tied) are converted to
Megatron checkpoints, loaded at TP=1, TP=2/PP=2 and TP=2/PP=2 with sequence parallelism (4
real gloo processes; 8 layers so that each pipeline stage holds sliding and global layers),
and their logits compared with transformers' ``Exaone4ForCausalLM`` loaded from the same
directory. The TP=2/PP=2 model is saved and exported back to HF: every tensor must be
bit-identical, config.json equal, and transformers must load the export.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nemo_exaone.checkpoint.safetensors_io import SafetensorsSource
from nemo_exaone.checkpoint.synthetic import write_random_hf_checkpoint
from nemo_exaone.config.presets import get_preset
from nemo_exaone.runtime.launch import spawn_local

pytestmark = pytest.mark.slow

_LLLG = ("sliding_attention",) * 3 + ("full_attention",)
ARCHS = {
    "hybrid-untied": get_preset("tiny4").replace(name="t4-hybrid", num_layers=8,
                                                 layer_types=_LLLG * 2),
    "global-tied": get_preset("tiny4").replace(
        name="t4-global", sliding_window=None, layer_types=("full_attention",) * 4,
        tie_word_embeddings=True, hf_extra={"sliding_window_pattern": None}),
    "hybrid-tied": get_preset("tiny4").replace(name="t4-hybrid-tied", tie_word_embeddings=True,
                                               head_dim=32, sliding_window=7),
}
BATCH, SEQ = 2, 40  # SEQ > every window above
LAYOUTS = ((1, 1, False), (2, 2, False), (2, 2, True))


def _logits_worker(cases: dict, tokens: torch.Tensor) -> dict:
    """Each converted checkpoint in every layout -> full logits; save at TP=2/PP=2; rank 0
    exports the saved checkpoints."""
    import os

    from megatron.core import parallel_state as ps
    from test_checkpoint_parity import _logits  # the 3.x harness: full logits, any layout

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
        arch = read_checkpoint_arch(case["ckpt"])
        for tp, pp, sp in LAYOUTS:
            parallel = ParallelConfig(tensor_model_parallel_size=tp,
                                      pipeline_model_parallel_size=pp, sequence_parallel=sp)
            init_distributed(parallel, seed=0)
            chunks = build_model_chunks(arch, parallel)
            load_mcore_checkpoint(chunks, case["ckpt"], arch)
            for chunk in chunks:
                chunk.eval()
            out[(name, tp, pp, sp)] = _logits(chunks, tokens)
            if (tp, pp, sp) == (2, 2, False):
                save_mcore_checkpoint(chunks, case["saved"], arch, hf_source_dir=case["hf"])
            ps.destroy_model_parallel()
    destroy_distributed()
    if int(os.environ["RANK"]) == 0:
        for case in cases.values():
            convert_mcore_to_hf(case["saved"], case["exported"], progress=False)
    return out


def _convert(jobs: list[dict]) -> None:
    from nemo_exaone.checkpoint.hf_to_mcore import convert_hf_to_mcore

    for job in jobs:
        convert_hf_to_mcore(job["hf"], job["ckpt"], tensor_parallel=2, pipeline_parallel=2,
                            progress=False)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("exaone4_parity")
    cases = {}
    for k, (name, arch) in enumerate(ARCHS.items()):
        hf = write_random_hf_checkpoint(root / f"hf{k}", arch, torch.float32, seed=10 + k,
                                        std=0.08, max_shard_bytes=300_000)
        cases[name] = dict(hf=str(hf), ckpt=str(root / f"mc{k}"),
                           saved=str(root / f"tp2pp2_{k}"), exported=str(root / f"back{k}"))
    tokens = torch.randint(0, 2048, (BATCH, SEQ), generator=torch.Generator().manual_seed(3))
    spawn_local(_convert, 1, list(cases.values()))
    merged: dict = {}
    for rank_out in spawn_local(_logits_worker, 4, cases, tokens):
        merged.update({k: v for k, v in rank_out.items() if v is not None})
    references = {name: _reference(case["hf"], tokens) for name, case in cases.items()}
    return dict(cases=cases, tokens=tokens, results=merged, references=references)


def _reference(hf_dir: str, tokens: torch.Tensor) -> torch.Tensor:
    from transformers import Exaone4ForCausalLM

    model = Exaone4ForCausalLM.from_pretrained(hf_dir, dtype=torch.float32,
                                               attn_implementation="eager").eval()
    with torch.no_grad():
        return model(tokens).logits


@pytest.mark.parametrize("name", list(ARCHS))
@pytest.mark.parametrize("layout", LAYOUTS,
                         ids=lambda x: f"tp{x[0]}pp{x[1]}" + ("sp" if x[2] else ""))
def test_logits_match_transformers_exaone4(run, name, layout):
    reference = run["references"][name]
    ours = run["results"][(name, *layout)]
    assert ours.shape == reference.shape == (BATCH, SEQ, 2048)
    diff = (ours - reference).abs().max().item()
    print(f"{name} TP={layout[0]} PP={layout[1]} SP={layout[2]}: max |logit diff| = "
          f"{diff:.2e}")
    assert diff <= 1e-4
    assert torch.equal(ours.argmax(-1), reference.argmax(-1))


@pytest.mark.parametrize("name", list(ARCHS))
def test_roundtrip_through_tp2_pp2_is_bit_identical(run, name):
    case = run["cases"][name]
    original, exported = Path(case["hf"]), Path(case["exported"])
    assert json.loads((exported / "config.json").read_text()) == \
        json.loads((original / "config.json").read_text())
    a, b = SafetensorsSource(original), SafetensorsSource(exported)
    assert sorted(a.tensors) == sorted(b.tensors)
    assert ("lm_head.weight" in b.tensors) == (not ARCHS[name].tie_word_embeddings)
    for tensor in a.tensors:
        x, y = a.read([tensor])[tensor], b.read([tensor])[tensor]
        assert x.dtype == y.dtype and x.shape == y.shape, tensor
        assert torch.equal(x.view(torch.uint8), y.view(torch.uint8)), tensor
    # transformers loads the export as Exaone4ForCausalLM and computes the same logits.
    assert torch.equal(_reference(case["exported"], run["tokens"]), run["references"][name])
