"""Sample sources and global batches: deterministic, layout independent, documents intact."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nemo_exaone.training.batches import GlobalBatches
from nemo_exaone.training.samples import BlendedSamples, SyntheticSamples, blending_indices


def write_indexed(prefix, documents: list[list[int]]) -> str:
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    builder = IndexedDatasetBuilder(f"{prefix}.bin", dtype=np.uint16)
    for doc in documents:
        builder.add_document(torch.tensor(doc, dtype=torch.int64), [len(doc)])
    builder.finalize(f"{prefix}.idx")
    return str(prefix)


def _docs(n: int, seed: int = 0, max_len: int = 40) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    # document d holds tokens 1000*d + k so every token says where it came from
    return [[1000 * d + k for k in range(int(rng.integers(3, max_len)))] for d in range(n)]


def test_whole_document_blend_with_replay_keeps_documents_and_weights(tmp_path):
    from nemo_exaone.config.presets import get_preset
    from nemo_exaone.training.config import DataConfig, DatasetSpec
    from nemo_exaone.training.data_sources import build_sample_source

    new = write_indexed(tmp_path / "new", _docs(40, seed=1, max_len=30))
    old = write_indexed(tmp_path / "old", [[d + 500 for d in doc] for doc in _docs(40, 2)])
    data = DataConfig(blend=[DatasetSpec(prefix=new)], replay=[DatasetSpec(prefix=old)],
                      replay_fraction=0.25, documents="whole")
    source, summary = build_sample_source(data, 32, get_preset("tiny"), tmp_path, 100)
    assert summary.weights == pytest.approx([0.75, 0.25])
    replayed = 0
    for i in range(40):
        sample = source[i]
        tokens, labels = sample["tokens"], sample["labels"]
        counted = sample["loss_mask"].bool()
        real = sample["document_ids"] >= 0  # -1 on padding
        # loss never crosses a document: every counted label is the next token of the same
        # document (token 1000*d + k is followed by 1000*d + k + 1), never the first token
        # of the next document or padding
        assert counted.sum() > 0 and not counted[~real].any()
        assert torch.equal(labels[counted], tokens[counted] + 1)
        # ... and each document's last token, whose label starts the next one, is not counted
        last = real & (labels != tokens + 1)
        assert not counted[last].any()
        # positions restart at 0 in every document (position k holds token ...k, +500 replayed)
        assert torch.equal(sample["position_ids"][real], tokens[real] % 1000 % 500)
        replayed += int(tokens[0].item() % 1000 >= 500)
    assert replayed == 10
    # attention never crosses a document either: the loop's batches keep document_ids and
    # the objective's mask lets a token see exactly the earlier tokens of its own document
    from nemo_exaone.model.packed_attention import isolation_inputs

    batch = GlobalBatches(source, 8, 8, 0, 1).microbatches(0)[0]
    tokens, real = batch["tokens"], batch["document_ids"] >= 0
    document = torch.where(real, tokens // 1000 * 2 + (tokens % 1000 >= 500).long(), -1)
    assert (document.amax(1) != document.amin(1)).all()  # every sample packs several
    causal = torch.ones(32, 32, dtype=torch.bool).tril()
    own = (document.unsqueeze(2) == document.unsqueeze(1)) & causal
    _, _, _, kwargs = isolation_inputs(batch, "local")
    blocked = kwargs["attention_mask"][:, 0]  # Megatron's convention: True = may not attend
    assert torch.equal(~blocked[real], own[real])
    again, _ = build_sample_source(data, 32, get_preset("tiny"), tmp_path, 100)
    assert all(torch.equal(again[i]["tokens"], source[i]["tokens"]) for i in range(20))


def test_blend_follows_the_weights_and_is_prefix_stable():
    component, within = blending_indices([0.75, 0.25], 400)
    assert np.bincount(component).tolist() == [300, 100]
    small_c, small_w = blending_indices([0.75, 0.25], 40)
    assert np.array_equal(component[:40], small_c) and np.array_equal(within[:40], small_w)
    blend = BlendedSamples([SyntheticSamples(100, 8, 1), SyntheticSamples(100, 8, 2)], [3, 1])
    first = [blend[i]["tokens"].tolist() for i in range(8)]
    assert first == [blend[i]["tokens"].tolist() for i in range(8)]


@pytest.mark.parametrize("dp_size", [1, 2, 4])
def test_global_batch_is_the_same_samples_under_any_data_parallel_size(dp_size):
    source = SyntheticSamples(vocab_size=500, seq_length=8, seed=11)

    def step_rows(dp: int, mbs: int) -> list[list[int]]:
        rows = []
        for rank in range(dp):
            for mb in GlobalBatches(source, 8, mbs, rank, dp).microbatches(16):
                rows += mb["tokens"].tolist()
        return sorted(rows)

    assert step_rows(dp_size, 2) == step_rows(1, 1)
    with pytest.raises(ValueError, match="global_batch_size=8 is not divisible"):
        GlobalBatches(source, 8, 3, 0, 1)
