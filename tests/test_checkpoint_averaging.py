"""Checkpoint averaging ("model soup", issue 9 item 7): the weighted fp32 mean tensor by
tensor, the result loads in generation and in the training loop (RM stage from it), and the
refusals (architectures, weights, reward heads, paths, NaN)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from reward_checkpoints import reward_checkpoint

from nemo_exaone.config.presets import get_preset

VOCAB = 512


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict:
    """Two bf16 checkpoints of one tiny architecture (the first carries a real tokenizer),
    one of another architecture, and a tokenizer directory."""
    from nemo_exaone.checkpoint.hf_to_mcore import convert_hf_to_mcore
    from nemo_exaone.checkpoint.synthetic import write_random_hf_checkpoint
    from nemo_exaone.data.assets import build_tiny_tokenizer
    from nemo_exaone.data.tokenizer import load_tokenizer

    root = tmp_path_factory.mktemp("average")
    tokenizer_dir = build_tiny_tokenizer(root / "prep", vocab_size=VOCAB)
    eot = load_tokenizer(tokenizer_dir).eot_id
    arch = get_preset("tiny").replace(name="tiny-avg", vocab_size=VOCAB, eos_token_id=eot)
    out = {"root": root, "arch": arch, "tokenizer": tokenizer_dir}
    for name, seed, which in (("a", 1, arch), ("b", 2, arch),
                              ("other", 3, arch.replace(num_layers=2, intermediate_size=128))):
        hf = write_random_hf_checkpoint(root / f"hf_{name}", which, dtype=torch.bfloat16,
                                        seed=seed, std=0.2)
        if name == "a":
            for item in Path(tokenizer_dir).iterdir():
                shutil.copy(item, hf / item.name)
        convert_hf_to_mcore(hf, root / name, progress=False)
        out[name] = root / name
    return out


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    from nemo_exaone.checkpoint.dcp_io import DistCheckpointReader

    reader = DistCheckpointReader(path)
    out = {}
    for key in reader.keys():
        md = reader.metadata.state_dict_metadata[key]
        if hasattr(md, "size"):
            out[key] = reader.read(key, (0,) * len(md.size), tuple(md.size))
    return out


def test_weighted_average_is_the_fp32_mean_tensor_by_tensor(sources, capsys):
    from nemo_exaone.checkpoint.metadata import read_metadata
    from nemo_exaone.cli import main

    out = sources["root"] / "soup"
    assert main(["align", "average", "--ckpt", str(sources["a"]), "--ckpt", str(sources["b"]),
                 "--weights", "0.75,0.25", "--out", str(out)]) == 0
    assert "averaged 2 checkpoints" in capsys.readouterr().out
    a, b, soup = _tensors(sources["a"]), _tensors(sources["b"]), _tensors(out)
    assert set(soup) == set(a) and len(soup) == 8
    bf16_rounded = 0
    for key, value in soup.items():
        assert value.dtype == torch.bfloat16, key  # the first source's dtype
        # 0.75 and 0.25 times a bf16 value are exact in fp32: one rounding, in the sum.
        expected = (0.75 * a[key].float() + 0.25 * b[key].float()).to(torch.bfloat16)
        torch.testing.assert_close(value, expected, rtol=0, atol=0, msg=key)
        # Accumulating in bf16 instead rounds 0.75 * a first: it differs somewhere.
        in_bf16 = torch.zeros_like(a[key]).add_(a[key], alpha=0.75).add_(b[key], alpha=0.25)
        bf16_rounded += int((value != in_bf16).sum())
    assert bf16_rounded > 0
    meta = read_metadata(out)
    assert [s["weight"] for s in meta.extra["averaged_from"]] == [0.75, 0.25]
    assert meta.extra["averaged_from"][0]["checkpoint"] == str(sources["a"])
    assert "tokenizer.json" in meta.extra["hf_identity"]["files"]  # carried from the first
    assert meta.hf_config == read_metadata(sources["a"]).hf_config


def test_uniform_and_normalized_weights(sources):
    from nemo_exaone.checkpoint.averaging import average_checkpoints

    a, b = _tensors(sources["a"]), _tensors(sources["b"])
    uniform = average_checkpoints([sources["a"], sources["b"], sources["b"]],
                                  sources["root"] / "uniform", max_chunk_bytes=16384)
    assert uniform.weights == pytest.approx([1 / 3] * 3) and uniform.chunks > 30  # rows split
    scaled = average_checkpoints([sources["b"], sources["a"]], sources["root"] / "scaled",
                                 weights=[3.0, 1.0], normalize=True)
    assert scaled.weights == [0.75, 0.25]
    third, quarter = _tensors(sources["root"] / "uniform"), _tensors(sources["root"] / "scaled")
    for key in a:
        acc = torch.zeros(a[key].shape)
        for part in (a[key], b[key], b[key]):
            acc.add_(part.float(), alpha=1 / 3)
        torch.testing.assert_close(third[key], acc.to(torch.bfloat16), rtol=0, atol=0)
        torch.testing.assert_close(
            quarter[key], (0.75 * b[key].float() + 0.25 * a[key].float()).to(torch.bfloat16),
            rtol=0, atol=0)


def test_the_average_loads_for_generation_and_as_a_training_stage(sources):
    from nemo_exaone.alignment.reward_model import init_reward_chunks
    from nemo_exaone.checkpoint.metadata import read_checkpoint_arch
    from nemo_exaone.inference import GenerationConfig, generate
    from nemo_exaone.inference.loading import load_for_generation
    from nemo_exaone.model.builder import build_model_chunks
    from nemo_exaone.model.sharding import unwrap
    from nemo_exaone.runtime.distributed import destroy_distributed

    out = sources["root"] / "soup"  # written by the first test (module order)
    if not out.exists():
        pytest.skip("needs test_weighted_average_is_the_fp32_mean_tensor_by_tensor")
    soup = _tensors(out)
    try:
        loaded = load_for_generation(out)
        assert loaded.tokenizer is not None
        assert loaded.arch == read_checkpoint_arch(sources["a"])
        prompt = loaded.tokenizer.encode("hello")
        result = generate(loaded.chunks, [prompt], GenerationConfig(max_new_tokens=4))
        assert len(result[0].token_ids) >= 1
        params = dict(unwrap(loaded.chunks[0]).named_parameters())
        torch.testing.assert_close(params["embedding.word_embeddings.weight"],
                                   soup["embedding.word_embeddings.weight"].float())
        destroy_distributed()
        # A reward-model stage starts from it as the training loop does (init.checkpoint).
        from nemo_exaone.runtime.distributed import init_distributed

        init_distributed()
        chunks = build_model_chunks(sources["arch"])
        assert init_reward_chunks(chunks, out, sources["arch"], load_weights=True) == []
        params = dict(unwrap(chunks[0]).named_parameters())
        torch.testing.assert_close(params["decoder.final_layernorm.weight"],
                                   soup["decoder.final_layernorm.weight"].float())
    finally:
        destroy_distributed()




def test_reward_models_average_their_heads_and_a_lone_head_is_refused(sources, capsys):
    from nemo_exaone.alignment.reward_model import HEAD_KEY
    from nemo_exaone.cli import main

    root, arch = sources["root"], sources["arch"]
    rm1 = reward_checkpoint(sources["a"], root / "rm1", arch, 1.0)
    rm2 = reward_checkpoint(sources["b"], root / "rm2", arch, 3.0)
    out = root / "rm_soup"
    assert main(["align", "average", "--ckpt", str(rm1), "--ckpt", str(rm2), "--out",
                 str(out)]) == 0
    one, two, soup = _tensors(rm1), _tensors(rm2), _tensors(out)
    torch.testing.assert_close(soup[HEAD_KEY], 0.5 * one[HEAD_KEY] + 0.5 * two[HEAD_KEY],
                               rtol=0, atol=0)
    torch.testing.assert_close(two[HEAD_KEY], 3 * one[HEAD_KEY])  # the heads did differ
    # fp32 sources (the RM saves) keep fp32.
    assert soup["decoder.final_layernorm.weight"].dtype == torch.float32
    capsys.readouterr()
    assert main(["align", "average", "--ckpt", str(rm1), "--ckpt", str(sources["b"]),
                 "--out", str(root / "never")]) == 2
    err = capsys.readouterr().err
    assert HEAD_KEY in err and str(rm1) in err and str(sources["b"]) in err
    assert not (root / "never").exists()


@pytest.mark.parametrize(("extra", "message"), [
    (["--weights", "0.5"], "--weights has 1 values for 2 checkpoints"),
    (["--weights", "0.5,0.6"], "sum to 1.1, not 1; pass --normalize"),
    (["--weights", "1.5,-0.5"], "entry 1 (-0.5) must be a finite number >= 0"),
    (["--weights", "0.5,x"], "entry 1 ('x') is not a number"),
    (["--weights", "0,0", "--normalize"], "needs a positive sum"),
])
def test_bad_weights_are_refused(sources, capsys, extra, message):
    from nemo_exaone.cli import main

    out = sources["root"] / "never"
    assert main(["align", "average", "--ckpt", str(sources["a"]), "--ckpt", str(sources["b"]),
                 "--out", str(out), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_other_refusals(sources, capsys, tmp_path):
    from nemo_exaone.cli import main

    a, b = str(sources["a"]), str(sources["b"])
    never = str(tmp_path / "never")

    def refused(args: list[str], *needles: str) -> None:
        assert main(["align", "average", *args]) == 2
        err = capsys.readouterr().err
        for needle in needles:
            assert needle in err, (needle, err)

    refused(["--ckpt", a, "--out", never], "at least two checkpoints, got 1")
    refused(["--ckpt", a, "--ckpt", str(sources["other"]), "--out", never],
            "different architectures", "num_layers: 4 vs 2", "intermediate_size: 176 vs 128")
    refused(["--ckpt", a, "--ckpt", b, "--out", b, "--overwrite"], "same path as --ckpt")
    refused(["--ckpt", a, "--ckpt", b, "--out", str(sources["root"])], "holds --ckpt")
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    refused(["--ckpt", a, "--ckpt", b, "--out", str(existing)], "--overwrite")
    assert (existing / "keep.txt").read_text() == "mine"
    assert not Path(never).exists()


def test_a_nan_in_a_source_is_refused_and_nothing_is_published(sources, tmp_path, capsys):
    from nemo_exaone.checkpoint.dcp_io import DistCheckpointReader
    from nemo_exaone.cli import main

    broken = tmp_path / "broken"
    shutil.copytree(sources["b"], broken)
    # Overwrite the stored final-norm weight (a torch.save'd tensor inside a .distcp file) with
    # a same-size NaN tensor, as a corrupted training run would have saved it.
    reader = DistCheckpointReader(broken)
    key = "decoder.final_layernorm.weight"
    info = [v for k, v in reader._reader.storage_data.items() if k.fqn == key][0]
    import io

    buffer = io.BytesIO()
    torch.save(torch.full((sources["arch"].hidden_size,), float("nan"),
                          dtype=torch.bfloat16), buffer)
    data = buffer.getvalue()
    assert len(data) == info.length
    with open(broken / info.relative_path, "r+b") as handle:
        handle.seek(info.offset)
        handle.write(data)
    out = tmp_path / "soup"
    assert main(["align", "average", "--ckpt", str(sources["a"]), "--ckpt", str(broken),
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert key in err and str(broken) in err and "NaN" in err
    assert not out.exists() and not list(tmp_path.glob(".soup*"))
