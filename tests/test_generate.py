"""Generation on Megatron-Core's inference stack against transformers, at TP=1 and TP=2.

One random tiny EXAONE 3.5-style checkpoint (weights drawn wide enough that greedy choices
are not near-ties) with a real byte-level BPE tokenizer is imported to Megatron and exported
back to HF; transformers' greedy ``generate`` on the export is the reference. The Megatron
side runs in real processes (one, then two gloo ranks) through ``nemo_exaone.inference``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nemo_exaone.config.presets import get_preset
from nemo_exaone.runtime.launch import spawn_local

pytestmark = pytest.mark.slow  # real processes: one, two (TP=2) and the command line

PROMPTS = [[5, 17, 300, 42, 9, 100], [12, 13, 14], [250, 251, 252, 253, 254]]
NEW = 8
SPECIALS = ["[PAD]", "[BOS]", "[UNK]", "[|endofturn|]", "[|system|]", "[|user|]",
            "[|assistant|]"]
EOT = 3  # [|endofturn|]: the 4th special token


def _write_tokenizer(directory: Path) -> int:
    """A byte-level BPE tokenizer trained here with EXAONE's special tokens; its size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from nemo_exaone.data.chat_format import CHAT_TEMPLATE

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["hello world, the model speaks Korean: 안녕하세요. The quick "
                             "brown fox jumps over the lazy dog."] * 20, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", bos_token="[BOS]",
                                   unk_token="[UNK]", eos_token="[|endofturn|]")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(directory)
    assert tok.token_to_id("[|endofturn|]") == EOT
    return tok.get_vocab_size()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    """HF source -> Megatron checkpoint (carrying the tokenizer) -> HF export; plus the same
    weights imported without a tokenizer."""
    from nemo_exaone.checkpoint.hf_to_mcore import convert_hf_to_mcore
    from nemo_exaone.checkpoint.mcore_to_hf import convert_mcore_to_hf
    from nemo_exaone.checkpoint.synthetic import write_random_hf_checkpoint

    root = tmp_path_factory.mktemp("generate")
    vocab = _write_tokenizer(root / "tokenizer")
    # The model's vocabulary padded (as published EXAONE models do) to split over 2 TP ranks.
    padded = -(-vocab // 64) * 64
    arch = get_preset("tiny").replace(name="tiny-gen", vocab_size=padded, eos_token_id=EOT)
    hf = write_random_hf_checkpoint(root / "hf", arch, seed=1, std=0.2)
    convert_hf_to_mcore(hf, root / "ckpt_no_tokenizer", progress=False)
    for name in os.listdir(root / "tokenizer"):
        shutil.copy(root / "tokenizer" / name, hf / name)
    convert_hf_to_mcore(hf, root / "ckpt", progress=False)
    convert_mcore_to_hf(root / "ckpt", root / "export", progress=False)
    return {"root": root, "hf": hf, "ckpt": root / "ckpt", "export": root / "export",
            "no_tokenizer": root / "ckpt_no_tokenizer", "vocab": vocab}


# ----------------------------------------------------------------------------- workers
def _full_logits(model, ids: list[int]) -> torch.Tensor:
    """Logits at every position of a plain forward (no KV cache), gathered over TP."""
    from megatron.core import parallel_state as ps

    tokens = torch.tensor([ids])
    positions = torch.arange(len(ids)).unsqueeze(0)
    with torch.no_grad():
        logits = model(tokens, positions, None)[0]
    parts = [torch.empty_like(logits) for _ in range(ps.get_tensor_model_parallel_world_size())]
    torch.distributed.all_gather(parts, logits.contiguous(),
                                 group=ps.get_tensor_model_parallel_group())
    return torch.cat(parts, dim=-1)


def _worker(ckpt: str, tp: int, full: bool = True) -> dict:
    """Greedy, stop ids, sampling (seeded; with ``full`` also other seeds, top-k, top-p)
    through nemo_exaone.inference."""
    from nemo_exaone.inference import GenerationConfig, generate
    from nemo_exaone.inference.loading import load_for_generation
    from nemo_exaone.runtime.distributed import destroy_distributed

    loaded = load_for_generation(ckpt, tensor_parallel=tp)
    chunks, model = loaded.chunks, loaded.chunks[0]
    out: dict = {"tokenizer": loaded.tokenizer is not None}
    model.train()
    rng_before = torch.get_rng_state()
    greedy = generate(chunks, PROMPTS, GenerationConfig(max_new_tokens=NEW))
    out["state_kept"] = model.training and torch.equal(torch.get_rng_state(), rng_before)
    # A training-style forward on the same ranks still works afterwards (megatron-core 0.19's
    # engine leaves a process-wide inference flag set that makes it fail).
    out["forward_after"] = tuple(_full_logits(model, PROMPTS[0]).shape)
    out["greedy"] = [g.token_ids for g in greedy]
    out["greedy_reasons"] = [g.finish_reason for g in greedy]
    # Stop at the 4th greedy token of prompt 0 or at the 6th of prompt 2 (two stop ids).
    stops = (greedy[0].token_ids[3], greedy[2].token_ids[5])
    stopped = generate(chunks, PROMPTS, GenerationConfig(max_new_tokens=NEW, stop_ids=stops))
    out["stops"] = stops
    out["stopped"] = [(g.token_ids, g.finish_reason) for g in stopped]
    sample = GenerationConfig(max_new_tokens=NEW, greedy=False, temperature=1.0, seed=7)
    out["sampled"] = [g.token_ids for g in generate(chunks, PROMPTS, sample)]
    if not full:
        destroy_distributed()
        return out
    out["sampled_again"] = [g.token_ids for g in generate(chunks, PROMPTS, sample)]
    other = GenerationConfig(max_new_tokens=NEW, greedy=False, temperature=1.0, seed=8)
    out["sampled_other_seed"] = [g.token_ids for g in generate(chunks, PROMPTS, other)]
    top_k = GenerationConfig(max_new_tokens=NEW, greedy=False, temperature=2.0, top_k=2, seed=3)
    out["top_k"] = [g.token_ids for g in generate(chunks, PROMPTS, top_k)]
    # Whether each top-k token is among the 2 likeliest after its prefix (plain forward).
    model.eval()
    ok = []
    for prompt, generated in zip(PROMPTS, out["top_k"]):
        top2 = _full_logits(model, prompt + generated).topk(2).indices  # [positions, 2]
        ok += [token in top2[len(prompt) - 1 + i].tolist() for i, token in enumerate(generated)]
    out["top_k_ranks_ok"] = all(ok)
    # A nucleus smaller than any single token's mass keeps only the likeliest token.
    top_p = GenerationConfig(max_new_tokens=NEW, greedy=False, temperature=1.0, top_p=1e-4,
                             seed=3)
    out["top_p"] = [g.token_ids for g in generate(chunks, PROMPTS, top_p)]
    destroy_distributed()
    return out


def _hf_greedy(export: Path, prompts: list[list[int]], new: int, eos: int | None = None
               ) -> list[list[int]]:
    """transformers' greedy generate, one prompt at a time (no padding involved)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(export, dtype=torch.float32).eval()
    out = []
    for prompt in prompts:
        ids = torch.tensor([prompt])
        with torch.no_grad():
            result = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new,
                                    do_sample=False, eos_token_id=eos, pad_token_id=0)
        out.append(result[0, len(prompt):].tolist())
    return out


@pytest.fixture(scope="module")
def tp1(tiny) -> dict:
    [result] = spawn_local(_worker, 1, str(tiny["ckpt"]), 1)
    return result


# ----------------------------------------------------------------------------- tests
def test_greedy_equals_transformers_on_the_export(tiny, tp1):
    assert tp1["tokenizer"], "the checkpoint's own tokenizer was not found"
    reference = _hf_greedy(tiny["export"], PROMPTS, NEW)
    assert all(len(r) == NEW for r in reference)
    assert tp1["greedy"] == reference
    assert tp1["greedy_reasons"] == ["length"] * len(PROMPTS)
    # Different continuations: the batch really holds different prompts.
    assert len({tuple(g) for g in tp1["greedy"]}) == len(PROMPTS)


def test_generation_restores_train_mode_and_rng(tiny, tp1):
    assert tp1["state_kept"]
    assert tp1["forward_after"][0] == len(PROMPTS[0])


def test_stop_ids_end_each_sequence_at_its_first_stop(tiny, tp1):
    stops = tp1["stops"]
    for greedy, (ids, reason) in zip(tp1["greedy"], tp1["stopped"]):
        first = next((i for i, t in enumerate(greedy) if t in stops), None)
        if first is None:
            assert (ids, reason) == (greedy, "length")
        else:  # the stop token itself is not part of the generated ids
            assert (ids, reason) == (greedy[:first], "stop")
    assert tp1["stopped"][0] == (tp1["greedy"][0][:3], "stop")
    # transformers stops at the same place (it keeps the stop token).
    [reference] = _hf_greedy(tiny["export"], PROMPTS[:1], NEW, eos=stops[0])
    assert reference == tp1["greedy"][0][:4]


def test_sampling_is_seeded_and_filtered(tp1):
    assert tp1["sampled"] == tp1["sampled_again"]
    assert tp1["sampled"] != tp1["greedy"]  # temperature 1 over 24 tokens: not argmax
    assert tp1["sampled"] != tp1["sampled_other_seed"]
    assert tp1["top_k_ranks_ok"]
    assert tp1["top_k"] != tp1["greedy"]  # top-2 at temperature 2 did sample
    assert tp1["top_p"] == tp1["greedy"]


def test_tensor_parallel_two_ranks(tiny, tp1):
    ranks = spawn_local(_worker, 2, str(tiny["ckpt"]), 2, False)
    for result in ranks:
        assert result["greedy"] == tp1["greedy"]
        assert result["stopped"] == tp1["stopped"]
    # Both ranks draw the same samples from their shared seed.
    assert ranks[0]["sampled"] == ranks[1]["sampled"]
    assert ranks[0]["sampled"] != ranks[0]["greedy"]


# ----------------------------------------------------------------------------- command line
def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nemo_exaone.cli", "generate", *args],
                          capture_output=True, text=True, timeout=300)


def test_cli_stops_at_the_checkpoints_eos_and_prints_json(tiny, tp1):
    """A checkpoint whose eos_token_id is the 4th greedy token of prompt 0: the command stops
    there (token_ids exclude it); prompt 1 of the same batch runs on."""
    from nemo_exaone.checkpoint.hf_to_mcore import convert_hf_to_mcore

    eos = tp1["greedy"][0][3]
    hf = tiny["root"] / "hf_eos"
    shutil.copytree(tiny["hf"], hf)
    config = json.loads((hf / "config.json").read_text())
    (hf / "config.json").write_text(json.dumps({**config, "eos_token_id": eos}))
    convert_hf_to_mcore(hf, tiny["root"] / "ckpt_eos", progress=False)
    done = _cli("--ckpt", str(tiny["root"] / "ckpt_eos"), "--max-new-tokens", str(NEW),
                "--json", *[arg for p in PROMPTS[:2] for arg in ("--prompt-ids",
                                                                  ",".join(map(str, p)))])
    assert done.returncode == 0, done.stderr
    first, second = [json.loads(line) for line in done.stdout.splitlines()]
    assert first["token_ids"] == tp1["greedy"][0][:3] and first["finish_reason"] == "stop"
    expected = tp1["greedy"][1]
    if eos in expected:
        expected = expected[:expected.index(eos)]
    assert second["token_ids"] == expected
    assert "using checkpoint" in done.stderr


def test_cli_chat_prompt_uses_the_checkpoints_tokenizer(tiny):
    from nemo_exaone.data.chat_format import encode_chat
    from nemo_exaone.data.tokenizer import load_tokenizer

    done = _cli("--ckpt", str(tiny["ckpt"]), "--prompt", "hello world", "--chat", "--json",
                "--max-new-tokens", "6")
    assert done.returncode == 0, done.stderr
    [line] = done.stdout.splitlines()
    result = json.loads(line)
    tokenizer = load_tokenizer(tiny["root"] / "tokenizer")
    ids = encode_chat(tokenizer, [{"role": "user", "content": "hello world"}],
                      add_generation_prompt=True).ids
    [reference] = _hf_greedy(tiny["export"], [ids], 6, eos=EOT)
    if reference and reference[-1] == EOT:
        reference = reference[:-1]
    assert result["token_ids"] == reference
    assert result["text"] == tokenizer.decode(reference, skip_special_tokens=True)


@pytest.mark.parametrize("args, message", [
    (["--prompt-ids", "1,x,3"], "entry 1 ('x') is not an integer"),
    (["--prompt-ids", "1,-2"], "entry 1 (-2) is negative"),
    (["--prompt-ids", "1,99999"], "outside the model's vocabulary"),
    (["--prompt-ids", "1,2", "--chat"], "--chat renders a text prompt"),
    (["--prompt-ids", "1,2", "--top-k", "3", "--top-p", "0.9"], "set the other to 0"),
    (["--prompt", "hi", "--max-new-tokens", "0"], "max_new_tokens=0"),
    (["--prompt-ids", "1,2", "--tp", "2"], "world_size=1 is not divisible by tensor"),
])
def test_cli_refuses_bad_input_naming_it(tiny, capsys, args, message):
    from nemo_exaone.cli import main

    argv = ["generate", "--ckpt", str(tiny["ckpt"]), *args]
    if "--max-new-tokens" not in args:
        argv += ["--max-new-tokens", "4"]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_cli_errors_name_the_checkpoint(tiny, capsys, tmp_path):
    from nemo_exaone.cli import main

    missing = tmp_path / "nowhere"
    assert main(["generate", "--ckpt", str(missing), "--prompt-ids", "1", "--max-new-tokens",
                 "2"]) == 2
    assert f"checkpoint path {missing} does not exist" in capsys.readouterr().err
    assert main(["generate", "--ckpt", str(tiny["no_tokenizer"]), "--prompt", "hello",
                 "--max-new-tokens", "2"]) == 2
    err = capsys.readouterr().err
    assert f"checkpoint {tiny['no_tokenizer']} carries no tokenizer" in err
    assert "--prompt-ids" in err


def test_default_stop_ids_are_endofturn_and_eos(tiny):
    from nemo_exaone.data.tokenizer import load_tokenizer
    from nemo_exaone.inference import default_stop_ids

    tokenizer = load_tokenizer(tiny["root"] / "tokenizer")
    assert default_stop_ids(tokenizer, 361) == (EOT, 361)
    assert default_stop_ids(tokenizer, [EOT, 7]) == (EOT, 7)
    assert default_stop_ids(None, None) == ()


def _greedy_worker(ckpt: str, prompts: list[list[int]], new: int) -> list[list[int]]:
    from nemo_exaone.inference import GenerationConfig, generate
    from nemo_exaone.inference.loading import load_for_generation
    from nemo_exaone.runtime.distributed import destroy_distributed

    loaded = load_for_generation(ckpt)
    out = [g.token_ids for g in generate(loaded.chunks, prompts, GenerationConfig(new))]
    destroy_distributed()
    return out


def test_exaone4_greedy_equals_transformers_across_the_sliding_window(tmp_path):
    """EXAONE 4.0 (hybrid sliding-window / global layers, QK-norm, post-norm) through the same
    KV-cache path: prompt 0 plus its continuation (30 tokens) outgrows tiny4's 16-token window."""
    from nemo_exaone.checkpoint.hf_to_mcore import convert_hf_to_mcore
    from nemo_exaone.checkpoint.mcore_to_hf import convert_mcore_to_hf
    from nemo_exaone.checkpoint.synthetic import write_random_hf_checkpoint

    arch = get_preset("tiny4")
    assert arch.sliding_window == 16 and "full_attention" in arch.layer_types
    hf = write_random_hf_checkpoint(tmp_path / "hf", arch, seed=1, std=0.2)
    convert_hf_to_mcore(hf, tmp_path / "ckpt", progress=False)
    convert_mcore_to_hf(tmp_path / "ckpt", tmp_path / "export", progress=False)
    prompts = [list(range(100, 118)), [12, 13, 14], [250, 251, 252, 253, 254]]
    [ours] = spawn_local(_greedy_worker, 1, str(tmp_path / "ckpt"), prompts, 12)
    assert ours == _hf_greedy(tmp_path / "export", prompts, 12)


def test_length_groups_bound_the_spread_and_the_batch():
    from nemo_exaone.inference.generation import length_groups

    # Spread allowed: max_new_tokens // 2 (here 4); the static engine feeds the excess of a
    # longer prompt one token per step, so prompts far apart in length get their own batch.
    assert length_groups([6, 3, 5], 8, 8) == [[1, 2, 0]]
    assert length_groups([18, 3, 5], 12, 8) == [[1, 2], [0]]
    assert length_groups([5, 5, 5, 5], 8, 2) == [[0, 1], [2, 3]]
    assert length_groups([1, 2, 3, 4, 5, 6], 2, 10) == [[0, 1], [2, 3], [4, 5]]
