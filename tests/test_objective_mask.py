"""The loss mask through the real objectives: a partial 0/1 mask selects exactly the tokens
whose loss is summed and counted.

Continued pretraining on whole documents pads, and the SFT assistant-only loss rests on the
mask: a mask that is ignored (every token counted) would train on padding and prompts while
every loss still looks finite. The expected values are computed by hand from the model's
logits, independently of the objective's code path.
"""

from __future__ import annotations

import pytest
import torch

from nemo_exaone.runtime.launch import spawn_local

BATCH, SEQ, VOCAB = 2, 12, 2048
# Partial mask: a prompt-like masked prefix, padding at the end, a hole in the middle.
MASK = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 0, 1, 1, 0, 0],
                     [1, 1, 0, 0, 0, 1, 1, 1, 1, 1, 1, 0]], dtype=torch.float32)


def _batch() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(7)
    seq = torch.randint(0, VOCAB, (BATCH, SEQ + 1), generator=gen)
    return {"tokens": seq[:, :-1].contiguous(), "labels": seq[:, 1:].contiguous(),
            "loss_mask": MASK.clone(),
            "position_ids": torch.arange(SEQ).unsqueeze(0).expand(BATCH, -1).contiguous()}


def _objective_losses() -> dict:
    """One tiny model; the LM and distillation objectives' (sum, count, report) on a masked
    batch, and the per-token cross-entropy computed by hand from the same model's logits."""
    from nemo_exaone.config.parallel import ParallelConfig
    from nemo_exaone.config.presets import get_preset
    from nemo_exaone.model.builder import ModelOptions, build_model
    from nemo_exaone.runtime.distributed import destroy_distributed, init_distributed
    from nemo_exaone.training.objectives import (
        DistillationLossConfig,
        DistillationObjective,
        LanguageModelObjective,
    )

    init_distributed(ParallelConfig(), seed=3)
    try:
        options = ModelOptions(extra_config={"calculate_per_token_loss": True})
        model, teacher = (build_model(get_preset("tiny"), options=options) for _ in range(2))
        batch = _batch()
        with torch.no_grad():
            logits = model(batch["tokens"], batch["position_ids"], None).float()
            token_ce = torch.nn.functional.cross_entropy(
                logits.reshape(-1, VOCAB), batch["labels"].reshape(-1), reduction="none"
            ).reshape(BATCH, SEQ)
            out = {"token_ce": token_ce}
            lm = LanguageModelObjective()
            output, loss_fn = lm.forward_step(iter([batch]), model)
            out["lm"] = loss_fn(output)
            distill = DistillationObjective(teacher, DistillationLossConfig("kd", alpha=1.0))
            output, loss_fn = distill.forward_step(iter([batch]), model)
            out["distill"] = loss_fn(output)
        return out
    finally:
        destroy_distributed()


@pytest.fixture(scope="module")
def losses() -> dict:
    [out] = spawn_local(_objective_losses, 1)
    return out


def test_lm_objective_sums_and_counts_only_masked_tokens(losses):
    token_ce = losses["token_ce"]
    want_sum = float((token_ce * MASK).sum())
    want_count = int(MASK.sum())
    assert want_count == 14 and want_count < MASK.numel()  # the mask really is partial
    total, count, report = losses["lm"]
    assert int(count) == want_count
    assert float(total) == pytest.approx(want_sum, rel=1e-5)
    # the masked-out tokens carry real loss: counting them would change the sum visibly
    assert float(token_ce.sum()) - want_sum > 1.0
    assert report["lm loss"].tolist() == pytest.approx([want_sum, want_count], rel=1e-5)


def test_distillation_objective_applies_the_same_mask(losses):
    # alpha=1: the KD loss is the plain cross-entropy, so the hand computation carries over.
    token_ce = losses["token_ce"]
    want_sum = float((token_ce * MASK).sum())
    total, count, report = losses["distill"]
    assert int(count) == int(MASK.sum())
    assert float(total) == pytest.approx(want_sum, rel=1e-5)
    assert report["distill loss"].tolist() == pytest.approx([want_sum, float(MASK.sum())], rel=1e-5)
    assert report["lm loss"].tolist() == pytest.approx([want_sum, float(MASK.sum())], rel=1e-5)
