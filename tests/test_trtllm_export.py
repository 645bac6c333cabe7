"""``export trtllm``: TensorRT-LLM engine-flow checkpoints checked by an independent reader.

Random tiny EXAONE checkpoints (tied with llama3 RoPE scaling and an odd vocabulary; untied
with one KV head) are converted to Megatron, exported at several TP sizes and dtypes, and read
back by ``tests/trtllm_reference.py`` (written from TensorRT-LLM's documented semantics, not
from the writer), whose fp32 forward must give our model's logits:

- float32 exports (tp 1, 2, 4; KV heads duplicated, vocabulary padded): max |diff| <= 2e-5
  (measured 1.8e-6 and 2.0e-6; logits up to ~3);
- bfloat16: equal to our model with its weights rounded to bf16 (max |diff| <= 2e-5, measured
  1.7e-6), and within 2 % (relative Frobenius norm; measured 0.8 %) of the fp32 model;
- FP8 (weights and activations fake-quantized by the exported scales, FP8 KV cache too), on
  held-out text: relative Frobenius error <= 0.2 against the fp32 model (measured 0.10 tied
  tp=2 with FP8 KV cache, 0.13 untied tp=1: E4M3's 3 mantissa bits on random weights), while
  the same export with fc and gate swapped gives > 0.4 (measured 0.57, 0.65). The FP8 scales
  themselves are checked exactly: weight scales against the float32 export's weights,
  activation and KV scales against the ranges the reader's own forward sees on the
  calibration text.
Every preset's config and per-rank tensor names/shapes/dtypes are checked from the shape plan
alone, against hand-computed numbers.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import trtllm_reference as ref
from safetensors import safe_open

from nemo_exaone.config.errors import InputError
from nemo_exaone.config.presets import get_preset
from nemo_exaone.export.trtllm_checkpoint import (
    TrtllmOptions,
    check_exportable,
    plan_rank_tensors,
    trtllm_config,
)
from nemo_exaone.runtime.launch import spawn_local

ARCHS = {
    # head_dim 32 puts some RoPE frequencies inside llama3's smoothed band; 1001 pads at tp 2/4.
    "tied": get_preset("tiny").replace(name="tiny-tied", head_dim=32, vocab_size=1001,
                                       max_position_embeddings=32768),
    "untied": get_preset("tiny").replace(
        name="tiny-untied", num_key_value_heads=1, tie_word_embeddings=False, rope_scaling=None,
        rope_theta=500000.0, max_position_embeddings=4096),
}
EXPORTS = {
    "tied_tp1_fp32": ("tied", TrtllmOptions(tp=1, dtype="float32")),
    "tied_tp2_fp32": ("tied", TrtllmOptions(tp=2, dtype="float32")),
    "tied_tp4_fp32": ("tied", TrtllmOptions(tp=4, dtype="float32")),  # KV 2 -> 4, vocab 1004
    "tied_tp2_bf16": ("tied", TrtllmOptions(tp=2, dtype="bfloat16")),
    "tied_tp2_fp8": ("tied", TrtllmOptions(tp=2, dtype="bfloat16", fp8=True, fp8_kv_cache=True)),
    "untied_tp1_fp32": ("untied", TrtllmOptions(tp=1, dtype="float32")),
    "untied_tp2_fp32": ("untied", TrtllmOptions(tp=2, dtype="float32")),  # KV 1 -> 2
    "untied_tp1_fp8": ("untied", TrtllmOptions(tp=1, dtype="float32", fp8=True)),
}
CLI_EXPORT = "untied_tp2_fp32"  # also written through the command line, must be identical
CALIB_TEXTS, CALIB_SEQ = 12, 48
BATCH, SEQ = 2, 24


def _our_logits(arch, ckpt: Path, tokens: torch.Tensor, text: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Our Megatron model's fp32 logits of random ``tokens``, the same with every weight
    rounded to bf16 first, and the fp32 logits of ``text`` tokens."""
    from nemo_exaone.checkpoint.mcore_checkpoint import load_mcore_checkpoint
    from nemo_exaone.checkpoint.mcore_layout import single_process_megatron
    from nemo_exaone.model.builder import ModelOptions, build_model

    positions = torch.arange(tokens.shape[1]).unsqueeze(0).expand(tokens.shape[0], -1)
    with single_process_megatron(), torch.no_grad():
        model = build_model(arch, options=ModelOptions(spec="local"))
        load_mcore_checkpoint([model], ckpt, arch)
        model.eval()
        fp32 = model(tokens, positions, None)
        text_logits = model(text, positions[: len(text)], None)
        for param in model.parameters():
            param.copy_(param.bfloat16().float())
        bf16 = model(tokens, positions, None)
    return fp32, bf16, text_logits


def _worker(root: str, tokens: torch.Tensor) -> dict:
    from nemo_exaone.checkpoint.hf_to_mcore import convert_hf_to_mcore
    from nemo_exaone.checkpoint.synthetic import write_random_hf_checkpoint
    from nemo_exaone.cli import main
    from nemo_exaone.data.assets import build_tiny_tokenizer
    from nemo_exaone.data.tokenizer import load_tokenizer
    from nemo_exaone.export.fp8_calibration import DEFAULT_CALIB_DATA, Calibration
    from nemo_exaone.export.trtllm_checkpoint import export_trtllm

    torch.set_num_threads(1)  # tiny tensors: threads only contend on a shared CI machine
    root_path = Path(root)
    tokenizer_dir = build_tiny_tokenizer(root_path / "tokenizer", vocab_size=512)
    lines = DEFAULT_CALIB_DATA.read_text(encoding="utf-8").splitlines()[:CALIB_TEXTS]
    calib = root_path / "calib.jsonl"
    calib.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tokenizer = load_tokenizer(tokenizer_dir)
    calib_rows = [ids[:CALIB_SEQ] for ids in
                  tokenizer.encode_batch([json.loads(line)["text"] for line in lines])]
    # Held-out text (after the calibration texts) for the FP8 comparison: FP8 scales fit the
    # ranges of text the tokenizer produces, not of arbitrary ids.
    held_out = [json.loads(line)["text"] for line in
                DEFAULT_CALIB_DATA.read_text(encoding="utf-8").splitlines()[CALIB_TEXTS:200]]
    text = torch.tensor([ids[:SEQ] for ids in tokenizer.encode_batch(held_out)
                         if len(ids) >= SEQ][:BATCH])
    out: dict = {"logits": {}, "calib_rows": calib_rows, "dirs": {}, "text": text}
    for k, (name, arch) in enumerate(ARCHS.items()):
        hf = write_random_hf_checkpoint(root_path / f"hf_{name}", arch, torch.float32, seed=k,
                                        std=0.08)
        for file in tokenizer_dir.iterdir():  # recorded with the checkpoint at import
            shutil.copy(file, hf / file.name)
        convert_hf_to_mcore(hf, root_path / f"mc_{name}", progress=False)
        out["logits"][name] = _our_logits(arch, root_path / f"mc_{name}", tokens, text)
    for name, (arch_name, options) in EXPORTS.items():
        target = root_path / name
        export_trtllm(root_path / f"mc_{arch_name}", target, options=options, calib_data=calib,
                      calib_samples=CALIB_TEXTS, calib_seq_len=CALIB_SEQ, progress=False)
        out["dirs"][name] = str(target)
    # A failure half-way through (here: a calibration that breaks at layer 2) leaves nothing.
    class Breaking(Calibration):
        def scale(self, layer: int, key: str) -> float:
            if layer == 2:
                raise RuntimeError("calibration broke at layer 2")
            return super().scale(layer, key)

    ranges = [dict.fromkeys(("qkv", "dense", "fc", "proj", "k", "v"), 1.0)] * 4
    try:
        export_trtllm(root_path / "mc_tied", root_path / "broken",
                      options=TrtllmOptions(tp=2, fp8=True),
                      calibration=Breaking(ranges, 1, 1, "test"), progress=False)
    except RuntimeError as exc:
        out["broken_error"] = str(exc)
    out["broken_left"] = sorted(p.name for p in root_path.iterdir() if "broken" in p.name)
    arch_name, options = EXPORTS[CLI_EXPORT]
    argv = ["export", "trtllm", "--ckpt", str(root_path / f"mc_{arch_name}"),
            "--out", str(root_path / "cli"), "--tp", str(options.tp), "--dtype", options.dtype,
            "--quiet"]
    out["cli_rc"] = main(argv)
    out["cli_again_rc"] = main(argv)  # an existing output is refused without --overwrite
    argv[argv.index("--out") + 1] = str(root_path / "cli_kv")
    out["cli_kv_rc"] = main(argv + ["--fp8-kv-cache"])  # needs --fp8
    out["cli_kv_left"] = (root_path / "cli_kv").exists()
    return out


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """The reader's tensors are tiny: on a shared CI machine extra threads only contend."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("trtllm")
    tokens = torch.randint(0, 1001, (BATCH, SEQ), generator=torch.Generator().manual_seed(0))
    result = spawn_local(_worker, 1, str(root), tokens)[0]
    result["tokens"] = tokens
    result["root"] = root
    return result


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


# ------------------------------------------------------------------ logits through the reader
@pytest.mark.parametrize("name", [n for n in EXPORTS if n.endswith("fp32")])
def test_float32_export_gives_our_logits(run, name):
    arch_name = EXPORTS[name][0]
    logits = ref.forward(ref.load(run["dirs"][name]), run["tokens"])
    ours = run["logits"][arch_name][0]
    assert logits.shape == ours.shape
    assert (logits - ours).abs().max() <= 2e-5


def test_bf16_export_is_our_model_rounded_to_bf16(run):
    logits = ref.forward(ref.load(run["dirs"]["tied_tp2_bf16"]), run["tokens"])
    fp32, bf16, _ = run["logits"]["tied"]
    assert (logits - bf16).abs().max() <= 2e-5
    assert _relative(logits, fp32) <= 0.02


@pytest.mark.parametrize("name", ["tied_tp2_fp8", "untied_tp1_fp8"])
def test_fp8_export_within_quantization_error(run, name):
    model = ref.load(run["dirs"][name])
    ours = run["logits"][EXPORTS[name][0]][2]
    assert _relative(ref.forward(model, run["text"]), ours) <= 0.2
    for layer in model.layers:  # the same comparison catches fc and gate swapped
        layer.fc, layer.gate = layer.gate, layer.fc
    assert _relative(ref.forward(model, run["text"]), ours) > 0.4


def test_fp32_comparison_catches_swapped_fc_gate(run):
    model = ref.load(run["dirs"]["tied_tp2_fp32"])
    for layer in model.layers:
        layer.fc, layer.gate = layer.gate, layer.fc
    assert (ref.forward(model, run["tokens"]) - run["logits"]["tied"][0]).abs().max() > 0.1


# ------------------------------------------------------------------ FP8 scales
def _read(directory: str, rank: int) -> dict[str, torch.Tensor]:
    with safe_open(str(Path(directory) / f"rank{rank}.safetensors"), "pt") as handle:
        return {k: handle.get_tensor(k) for k in handle.keys()}


def test_fp8_weight_scales_reconcile_fused_linears(run):
    fp32 = ref.load(run["dirs"]["tied_tp1_fp32"])  # the same weights, unquantized
    ranks = [_read(run["dirs"]["tied_tp2_fp8"], r) for r in range(2)]
    for i, layer in enumerate(fp32.layers):
        t = f"transformer.layers.{i}."
        expected = {
            "attention.qkv": max(float(w.weight.abs().max()) for w in (layer.q, layer.k, layer.v)),
            "attention.dense": float(layer.dense.weight.abs().max()),
            "mlp.fc": max(float(layer.fc.weight.abs().max()), float(layer.gate.weight.abs().max())),
            "mlp.proj": float(layer.proj.weight.abs().max()),
        }
        expected["mlp.gate"] = expected["mlp.fc"]
        for rank in ranks:
            for module, amax in expected.items():
                scale = rank[f"{t}{module}.weights_scaling_factor"]
                assert scale.dtype == torch.float32 and scale.shape == (1,)
                assert float(scale) == pytest.approx(amax / 448, rel=1e-6), (i, module)
            assert torch.equal(rank[f"{t}mlp.fc.activation_scaling_factor"],
                               rank[f"{t}mlp.gate.activation_scaling_factor"])
    # Dequantized weights are the originals within E4M3 rounding (3 mantissa bits).
    merged = ref.load(run["dirs"]["tied_tp2_fp8"])
    for ours, theirs in zip(fp32.layers, merged.layers):
        for a, b in ((ours.q, theirs.q), (ours.fc, theirs.fc), (ours.gate, theirs.gate),
                     (ours.proj, theirs.proj)):
            scale = float(b.weight.abs().max()) / 448
            assert ((a.weight - b.weight).abs() <= a.weight.abs() / 16 + scale / 2**9 * 1.01).all()


def test_fp8_activation_scales_are_calibrated_input_ranges(run):
    """The reader's own fp32 forward over the calibration text sees the ranges the exported
    activation (and KV-cache) scales encode: the linears' inputs and post-RoPE k, v."""
    amax: dict[tuple[int, str], float] = {}

    def observe(layer: int, what: str, x: torch.Tensor) -> None:
        amax[layer, what] = max(amax.get((layer, what), 0.0), float(x.abs().max()))

    fp32 = ref.load(run["dirs"]["tied_tp1_fp32"])
    for row in run["calib_rows"]:
        ref.forward(fp32, torch.tensor([row]), observe)
    rank0 = _read(run["dirs"]["tied_tp2_fp8"], 0)
    for i in range(len(fp32.layers)):
        t = f"transformer.layers.{i}."
        for module, what in (("attention.qkv", "qkv"), ("attention.dense", "dense"),
                             ("mlp.fc", "fc"), ("mlp.gate", "fc"), ("mlp.proj", "proj")):
            got = float(rank0[f"{t}{module}.activation_scaling_factor"]) * 448
            assert got == pytest.approx(amax[i, what], rel=1e-4), (i, module)
        kv = float(rank0[f"{t}attention.kv_cache_scaling_factor"]) * 448
        assert kv == pytest.approx(max(amax[i, "k"], amax[i, "v"]), rel=1e-4), i


# ------------------------------------------------------------------ files, config, CLI
@pytest.mark.parametrize("name", list(EXPORTS))
def test_rank_files_and_config_follow_the_plan(run, name):
    arch_name, options = EXPORTS[name]
    arch = ARCHS[arch_name]
    directory = Path(run["dirs"][name])
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        ["config.json"] + [f"rank{r}.safetensors" for r in range(options.tp)])
    assert json.loads((directory / "config.json").read_text()) == trtllm_config(arch, options)
    plan = {e.name: (e.dtype, e.shape) for e in plan_rank_tensors(arch, options)}
    for rank in range(options.tp):
        tensors = _read(str(directory), rank)
        assert {k: (v.dtype, tuple(v.shape)) for k, v in tensors.items()} == plan


def test_cli_export_is_identical_and_refuses_bad_requests(run):
    assert run["cli_rc"] == 0
    api, cli = Path(run["dirs"][CLI_EXPORT]), run["root"] / "cli"
    for file in sorted(p.name for p in api.iterdir()):
        assert (api / file).read_bytes() == (cli / file).read_bytes(), file
    assert run["cli_again_rc"] == 2 and run["cli_kv_rc"] == 2 and not run["cli_kv_left"]


def test_failed_export_leaves_no_output(run):
    assert run["broken_error"] == "calibration broke at layer 2"
    assert run["broken_left"] == []


def test_exaone4_is_refused_toward_the_pytorch_flow():
    with pytest.raises(InputError, match="PyTorch flow"):
        check_exportable(get_preset("exaone4.0-32b"), TrtllmOptions(tp=8))


@pytest.mark.parametrize("preset, tp, message", [
    ("exaone3.5-32b", 16, "num_attention_heads=40"),
    ("exaone3.5-7.8b", 3, "num_attention_heads=32"),
    ("exaone3.5-7.8b", 0, "positive"),
])
def test_impossible_tensor_parallel_sizes_are_refused(preset, tp, message):
    with pytest.raises(InputError, match=message):
        check_exportable(get_preset(preset), TrtllmOptions(tp=tp))


# ------------------------------------------------------------------ presets, shapes only
# Hand-computed per-rank shapes: (qkv rows, dense cols = q rows, fc/gate rows, lm_head rows).
# qkv rows = (heads / tp + 2 * max(kv, tp) / tp) * head_dim.
PRESET_SHAPES = {
    ("exaone3.0-7.8b", 1): (6144, 4096, 14336, 102400),
    ("exaone3.0-7.8b", 2): (3072, 2048, 7168, 51200),
    ("exaone3.0-7.8b", 4): (1536, 1024, 3584, 25600),
    ("exaone3.0-7.8b", 8): (768, 512, 1792, 12800),
    ("exaone3.5-2.4b", 1): (3840, 2560, 7168, 102400),
    ("exaone3.5-2.4b", 2): (1920, 1280, 3584, 51200),
    ("exaone3.5-2.4b", 4): (960, 640, 1792, 25600),
    ("exaone3.5-2.4b", 8): (480, 320, 896, 12800),
    ("exaone3.5-2.4b", 16): (320, 160, 448, 6400),  # 8 KV heads duplicated to 16
    ("exaone3.5-7.8b", 1): (6144, 4096, 14336, 102400),
    ("exaone3.5-7.8b", 2): (3072, 2048, 7168, 51200),
    ("exaone3.5-7.8b", 4): (1536, 1024, 3584, 25600),
    ("exaone3.5-7.8b", 8): (768, 512, 1792, 12800),
    ("exaone3.5-7.8b", 16): (512, 256, 896, 6400),  # 8 KV heads duplicated to 16
    ("exaone3.5-32b", 1): (7168, 5120, 27392, 102400),
    ("exaone3.5-32b", 2): (3584, 2560, 13696, 51200),
    ("exaone3.5-32b", 4): (1792, 1280, 6848, 25600),
    ("exaone3.5-32b", 8): (896, 640, 3424, 12800),
}
HIDDEN = {"exaone3.0-7.8b": 4096, "exaone3.5-2.4b": 2560, "exaone3.5-7.8b": 4096,
          "exaone3.5-32b": 5120}
LAYERS = {"exaone3.0-7.8b": 32, "exaone3.5-2.4b": 30, "exaone3.5-7.8b": 32, "exaone3.5-32b": 64}


@pytest.mark.parametrize("preset, tp", list(PRESET_SHAPES))
@pytest.mark.parametrize("fp8", [False, True])
def test_preset_plan_shapes(preset, tp, fp8):
    arch = get_preset(preset)
    options = TrtllmOptions(tp=tp, dtype="bfloat16", fp8=fp8, fp8_kv_cache=fp8)
    check_exportable(arch, options)
    qkv, q, inter, vocab = PRESET_SHAPES[preset, tp]
    hidden, bf16, f32 = HIDDEN[preset], torch.bfloat16, torch.float32
    linear = torch.float8_e4m3fn if fp8 else bf16
    plan = {e.name: (e.dtype, e.shape) for e in plan_rank_tensors(arch, options)}
    expected = {"transformer.vocab_embedding.weight": (bf16, (102400, hidden)),
                "transformer.ln_f.weight": (bf16, (hidden,)),
                "lm_head.weight": (bf16, (vocab, hidden))}
    for i in range(LAYERS[preset]):
        t = f"transformer.layers.{i}."
        expected |= {t + "input_layernorm.weight": (bf16, (hidden,)),
                     t + "post_layernorm.weight": (bf16, (hidden,))}
        for module, shape in (("attention.qkv", (qkv, hidden)), ("attention.dense", (hidden, q)),
                              ("mlp.fc", (inter, hidden)), ("mlp.gate", (inter, hidden)),
                              ("mlp.proj", (hidden, inter))):
            expected[f"{t}{module}.weight"] = (linear, shape)
            if fp8:
                expected[f"{t}{module}.weights_scaling_factor"] = (f32, (1,))
                expected[f"{t}{module}.activation_scaling_factor"] = (f32, (1,))
        if fp8:
            expected[t + "attention.kv_cache_scaling_factor"] = (f32, (1,))
    assert plan == expected


@pytest.mark.parametrize("preset", list(HIDDEN))
def test_preset_config_fields(preset):
    arch = get_preset(preset)
    config = trtllm_config(arch, TrtllmOptions(tp=4, dtype="bfloat16", fp8=True))
    published = arch.to_hf_config()
    assert config["architecture"] == "LlamaForCausalLM"
    assert config["mapping"] == {"world_size": 4, "tp_size": 4, "pp_size": 1}
    assert config["quantization"] == {"quant_algo": "FP8", "kv_cache_quant_algo": None,
                                      "exclude_modules": ["lm_head"]}
    assert config["rotary_scaling"] == published.get("rope_scaling")
    assert config["rotary_base"] == published["rope_theta"]
    assert config["tie_word_embeddings"] is (preset == "exaone3.5-2.4b")
    assert config["head_size"] == published.get("head_dim", 128)
    assert (config["num_key_value_heads"], config["vocab_size"], config["norm_epsilon"],
            config["hidden_act"], config["position_embedding_type"]) == (
        8, 102400, 1e-5, "silu", "rope_gpt_neox")
    assert config["intermediate_size"] == published["intermediate_size"]
    assert config["max_position_embeddings"] == published["max_position_embeddings"]


# ------------------------------------------------------------------ scripts/build_engine.sh
SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "build_engine.sh"


def _build_engine(args: list[str], path: str) -> subprocess.CompletedProcess:
    env = {"PATH": path, "HOME": "/tmp"}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env)


def test_build_engine_refuses_without_trtllm_build(run, tmp_path):
    done = _build_engine([run["dirs"]["tied_tp2_bf16"], str(tmp_path / "engine")],
                         f"{tmp_path}:/usr/bin:/bin")
    assert done.returncode == 127 and "trtllm-build is not on PATH" in done.stderr


def test_build_engine_passes_documented_flags(run, tmp_path):
    """A stand-in trtllm-build records its arguments (the real one needs a GPU image)."""
    stub = tmp_path / "trtllm-build"
    stub.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$(dirname "$0")/args"\n')
    stub.chmod(0o755)
    path = f"{tmp_path}:/usr/bin:/bin"
    fp8, bf16 = run["dirs"]["tied_tp2_fp8"], run["dirs"]["tied_tp2_bf16"]
    assert _build_engine([fp8, str(tmp_path / "e"), "fp8"], path).returncode == 0
    args = (tmp_path / "args").read_text().split("\n")
    pairs = dict(zip(args[::2], args[1::2]))
    assert pairs["--checkpoint_dir"] == fp8 and pairs["--gemm_plugin"] == "auto"
    assert pairs["--use_fp8_context_fmha"] == "enable"
    assert {"--max_batch_size", "--max_input_len", "--max_seq_len", "--max_num_tokens"} <= set(args)
    assert _build_engine([bf16, str(tmp_path / "e2")], path).returncode == 0
    assert "--use_fp8_context_fmha" not in (tmp_path / "args").read_text()
    for wrong in ([fp8, str(tmp_path / "e3"), "bf16"], [bf16, str(tmp_path / "e4"), "fp8"]):
        done = _build_engine(wrong, path)
        assert done.returncode == 2 and "mode" in done.stderr
