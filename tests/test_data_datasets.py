"""Blends with replay, Megatron GPT datasets, whole-document and SFT readers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nemo_exaone.data.assets import asset_paths, build_tiny_tokenizer
from nemo_exaone.data.blends import BlendConfig, resolve_blend, token_count
from nemo_exaone.data.document_datasets import build_long_context_dataset, build_sft_dataset
from nemo_exaone.data.megatron_helpers import ensure_dataset_helpers
from nemo_exaone.data.preprocess import PreprocessConfig, preprocess
from nemo_exaone.data.pretraining_datasets import build_pretraining_datasets
from nemo_exaone.data.tokenizer import load_tokenizer


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Tokenizer + three text datasets (two halves of the corpus, one short) + the chat set."""
    root = tmp_path_factory.mktemp("data")
    tokenizer = build_tiny_tokenizer(root / "tok")
    lines = asset_paths()["corpus"].read_text(encoding="utf-8").splitlines()
    parts = {"a": lines[:600], "b": lines[600:], "c": lines[:50]}
    for name, part in parts.items():
        (root / f"{name}.jsonl").write_text("\n".join(part) + "\n", encoding="utf-8")
        preprocess(PreprocessConfig([str(root / f"{name}.jsonl")], str(root / name),
                                    str(tokenizer), workers=0, show_progress=False))
    preprocess(PreprocessConfig([str(asset_paths()["chat_sft"])], str(root / "sft"),
                                str(tokenizer), mode="chat", workers=0, show_progress=False))
    return root, tokenizer


def test_replay_weights_follow_token_counts(data):
    root, _ = data
    a, b, c = (str(root / n) for n in "abc")
    counts = {p: token_count(p) for p in (a, b, c)}
    blend = resolve_blend(BlendConfig(prefixes=[a, b], replay_prefixes=[c], replay_fraction=0.25))
    weights = dict(zip(blend.prefixes, blend.weights))
    assert weights[c] == pytest.approx(0.25)
    assert weights[a] == pytest.approx(0.75 * counts[a] / (counts[a] + counts[b]))
    assert weights[b] == pytest.approx(0.75 * counts[b] / (counts[a] + counts[b]))
    # explicit stage-1 weights are kept in proportion inside the replay share
    blend = resolve_blend(BlendConfig(prefixes=[c], replay_prefixes=[a, b],
                                      replay_weights=[3, 1], replay_fraction=0.2))
    assert dict(zip(blend.prefixes, blend.weights)) == pytest.approx({c: 0.8, a: 0.15, b: 0.05})
    # the same prefix as new data and replay: weights add up
    blend = resolve_blend(BlendConfig(prefixes=[a], weights=[1], replay_prefixes=[a, b],
                                      replay_weights=[1, 1], replay_fraction=0.5))
    assert dict(zip(blend.prefixes, blend.weights)) == pytest.approx({a: 0.75, b: 0.25})


@pytest.mark.parametrize("kwargs,match", [
    ({"prefixes": []}, "at least one"),
    ({"prefixes": ["x"], "replay_fraction": 0.1}, "replay_prefixes"),
    ({"prefixes": ["x"], "replay_fraction": 1.0, "replay_prefixes": ["y"]}, r"\[0, 1\)"),
    ({"prefixes": ["x", "y"], "weights": [1.0]}, "2 prefixes"),
])
def test_blend_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BlendConfig(**kwargs)


def test_missing_prefix_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.bin"):
        resolve_blend(BlendConfig(prefixes=[str(tmp_path / "nothing")]))


def test_dataset_helpers_are_available():
    helpers = ensure_dataset_helpers()
    assert hasattr(helpers, "build_blending_indices") and hasattr(helpers, "build_sample_idx_int32")


def _build(root, tokenizer, cache, num_samples=120, seed=5):
    config = BlendConfig(prefixes=[str(root / "a")], replay_prefixes=[str(root / "b")],
                         replay_fraction=0.3, split="98,2,0")
    return build_pretraining_datasets(config, tokenizer, seq_length=32, seed=seed,
                                      num_samples=(num_samples, 8, 0), cache_dir=cache)


def test_blended_gpt_datasets_are_deterministic_and_follow_weights(data, tmp_path):
    root, tokenizer = data
    first = _build(root, tokenizer, tmp_path / "cache1")
    second = _build(root, tokenizer, tmp_path / "cache2")  # rebuilt from scratch
    cached = _build(root, tokenizer, tmp_path / "cache1")  # loaded from the cache
    assert len(first.train) >= 120 and first.valid is not None and first.test is None
    for index in range(len(first.train)):
        sample = first.train[index]
        assert sample["tokens"].shape == (32,)
        assert torch.equal(sample["tokens"], second.train[index]["tokens"])
        assert torch.equal(sample["labels"], cached.train[index]["labels"])
    ids = np.array([int(first.train[i]["dataset_id"]) for i in range(len(first.train))])
    assert abs((ids == 1).mean() - 0.3) < 0.05  # replay share, by samples = by tokens
    other_seed = _build(root, tokenizer, tmp_path / "cache1", seed=6)
    assert not all(torch.equal(first.train[i]["tokens"], other_seed.train[i]["tokens"])
                   for i in range(10))


def _build_in_group(root: str, tokenizer: str, cache: str) -> list[list[int]]:
    torch.distributed.init_process_group("gloo")
    try:
        from pathlib import Path

        datasets = _build(Path(root), tokenizer, cache, num_samples=40)
        rank = torch.distributed.get_rank()
        # Global batches of 2 ranks x 2 samples; rank r reads samples 4k + 2r and 4k + 2r + 1.
        usable = len(datasets.train) // 4 * 4
        indices = [i for i in range(usable) if i // 2 % 2 == rank]
        return [datasets.train[i]["tokens"].tolist() for i in indices]
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_two_rank_gloo_group_builds_the_same_datasets(data, tmp_path):
    from nemo_exaone.runtime.launch import spawn_local

    root, tokenizer = data
    rank0, rank1 = spawn_local(_build_in_group, 2, str(root), str(tokenizer), str(tmp_path / "c"))
    single = _build(root, tokenizer, tmp_path / "single", num_samples=40).train
    expected = [single[i]["tokens"].tolist() for i in range(len(single) // 4 * 4)]
    merged = [rank0[i * 2: i * 2 + 2] + rank1[i * 2: i * 2 + 2] for i in range(len(rank0) // 2)]
    assert [row for pair in merged for row in pair] == expected


def test_whole_documents_are_never_split(data):
    root, tokenizer_dir = data
    tokenizer = load_tokenizer(tokenizer_dir)
    dataset = build_long_context_dataset(root / "c", seq_length=256, seed=3)
    assert dataset.num_documents + dataset.num_skipped == 50
    seen = set()
    for index in range(len(dataset)):
        sample = dataset[index]
        doc_ids = sample["document_ids"].numpy()
        for doc in set(doc_ids.tolist()) - {-1}:
            positions = np.nonzero(doc_ids == doc)[0]
            tokens = sample["tokens"].numpy()[positions]
            whole = dataset.document(doc)
            assert np.array_equal(tokens, whole[: len(tokens)])  # starts at the doc start
            assert len(tokens) in (len(whole), len(whole) - 1)  # the last token is a label
            assert sample["position_ids"].numpy()[positions].tolist() == list(range(len(tokens)))
            seen.add(doc)
        same_doc = (doc_ids[1:] == doc_ids[:-1]) & (doc_ids[1:] >= 0)
        assert np.array_equal(sample["loss_mask"].numpy()[:-1], same_doc.astype(np.float32))
    assert len(seen) == dataset.num_documents
    assert tokenizer.eod_id in dataset.document(0).tolist()
    short = build_long_context_dataset(root / "c", seq_length=16, too_long="skip")
    assert short.num_skipped > 0
    with pytest.raises(ValueError, match="seq_length"):
        build_long_context_dataset(root / "c", seq_length=16, too_long="error")


def test_sft_dataset_trains_only_on_assistant_tokens(data):
    root, tokenizer_dir = data
    tokenizer = load_tokenizer(tokenizer_dir)
    dataset = build_sft_dataset(root / "sft", seq_length=512, pack=True)
    chats = [json.loads(line)["messages"] for line in
             asset_paths()["chat_sft"].read_text(encoding="utf-8").splitlines()]
    assistant_text = []
    for index in range(len(dataset)):
        sample = dataset[index]
        labels, mask = sample["labels"].numpy(), sample["loss_mask"].numpy()
        trained = labels[mask > 0]
        # split trained ids into runs, each run = one assistant reply ending in [|endofturn|]
        run: list[int] = []
        for token in trained.tolist():
            run.append(token)
            if token == tokenizer.eot_id:
                assistant_text.append(tokenizer.decode(run))
                run = []
    expected = sorted(m["content"] + "[|endofturn|]" for c in chats for m in c
                      if m["role"] == "assistant")
    assert sorted(assistant_text) == expected
    with pytest.raises(FileNotFoundError, match="not a chat dataset"):
        build_sft_dataset(root / "a", seq_length=64)


@pytest.mark.slow
def test_compiled_helpers_match_the_shipped_extension(tmp_path):
    """The fallback build of Megatron's helpers.cpp (used where the wheel lacks the .so)."""
    pytest.importorskip("pybind11")
    import importlib.machinery
    import importlib.util
    import shutil

    if not (shutil.which("c++") or shutil.which("g++")):
        pytest.skip("no C++ compiler")
    from nemo_exaone.data.megatron_helpers import compile_dataset_helpers

    path = compile_dataset_helpers(tmp_path)
    name = "nemo_exaone_compiled.helpers_cpp"  # not registered: the shipped one stays in use
    loader = importlib.machinery.ExtensionFileLoader(name, str(path))
    compiled = importlib.util.module_from_spec(
        importlib.util.spec_from_file_location(name, path, loader=loader))
    loader.exec_module(compiled)
    shipped = ensure_dataset_helpers()
    rng = np.random.default_rng(0)
    sizes = rng.integers(1, 300, size=200).astype(np.int32)
    documents = rng.permutation(np.tile(np.arange(200, dtype=np.int32), 2)).astype(np.int32)
    args = (sizes, documents, 64, 2, int(sizes.sum()), True, 1)
    assert np.array_equal(compiled.build_sample_idx_int32(*args),
                          shipped.build_sample_idx_int32(*args))
    weights = [0.7, 0.3]
    out = [(np.zeros(1000, np.int16), np.zeros(1000, np.int64)) for _ in range(2)]
    compiled.build_blending_indices(*out[0], weights, 2, 1000, False)
    shipped.build_blending_indices(*out[1], weights, 2, 1000, False)
    assert np.array_equal(out[0][0], out[1][0]) and np.array_equal(out[0][1], out[1][1])
