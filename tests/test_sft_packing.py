"""Packed samples never attend to each other: a packed micro-batch gives each sample the same
loss and the same gradients as that sample trained alone (fp32, a real Megatron-Core model
through the real LM objective).

Control: the same packed batch with plain causal attention (the mask dropped) differs from
the unpacked losses by far more than the tolerance, so the comparison can see attention
spanning samples. Run for EXAONE 3.x (tiny) and EXAONE 4.0 (tiny4: sliding-window layers OR
their band into the block mask; samples longer than its 16-token window).
"""

from __future__ import annotations

import pytest
import torch

from nemo_exaone.runtime.launch import spawn_local

SEQ = 48
LENGTHS = (19, 9, 17)  # 45 tokens + 4 slots of padding in a pack of SEQ + 1


def _pieces(vocab: int) -> list[tuple[list[int], list[int]]]:
    gen = torch.Generator().manual_seed(11)
    pieces = []
    for length in LENGTHS:
        ids = torch.randint(3, vocab, (length,), generator=gen).tolist()
        mask = [0] * 4 + [1] * (length - 4)  # a prompt-like untrained head
        pieces.append((ids, mask))
    return pieces


def _per_sample(presets: tuple[str, ...]) -> dict:
    from nemo_exaone.config.parallel import ParallelConfig
    from nemo_exaone.config.presets import get_preset
    from nemo_exaone.runtime.distributed import destroy_distributed, init_distributed

    init_distributed(ParallelConfig(), seed=5)
    try:
        return {preset: _compare(get_preset(preset)) for preset in presets}
    finally:
        destroy_distributed()


def _compare(arch) -> dict:
    """Each sample alone, the pack with its mask, and the pack with plain causal attention."""
    from nemo_exaone.data.packing import pack_sample
    from nemo_exaone.model.builder import ModelOptions, build_model
    from nemo_exaone.training.batches import collate
    from nemo_exaone.training.objectives import LanguageModelObjective

    model = build_model(arch, options=ModelOptions(
        spec="local", extra_config={"calculate_per_token_loss": True}))
    objective = LanguageModelObjective(spec="local")
    params = [p for p in model.parameters() if p.requires_grad]
    pieces = _pieces(arch.vocab_size)

    def losses_and_grads(batch, select):
        """Per sample: (masked loss sum, gradient vector of that sum)."""
        out = []
        for keep in select:  # a forward each: Megatron's CE backward runs once per graph
            output, _ = objective.forward_step(iter([batch]), model)
            total = (output.float() * batch["loss_mask"] * keep).sum()
            grads = torch.autograd.grad(total, params)
            out.append((total.detach(), torch.cat([g.reshape(-1) for g in grads])))
        return out

    alone = []
    for piece in pieces:
        batch = collate([pack_sample([piece], len(piece[0]) - 1)])
        del batch["document_ids"]  # one sample: plain causal attention, no mask
        alone += losses_and_grads(batch, [torch.ones(1)])
    packed = collate([pack_sample(pieces, SEQ)])
    select = [(packed["document_ids"] == n).float() for n in range(len(pieces))]
    together = losses_and_grads(packed, select)
    spanning = dict(packed)
    del spanning["document_ids"]  # the control: attention crosses the samples
    crossed = losses_and_grads(spanning, select)
    return {"alone": alone, "packed": together, "crossed": crossed,
            "padding": int((packed["document_ids"] == -1).sum())}


PRESETS = ("tiny", "tiny4")


@pytest.fixture(scope="module")
def all_results() -> dict:
    [out] = spawn_local(_per_sample, 1, PRESETS)
    return out


@pytest.fixture(params=PRESETS)
def results(request, all_results) -> dict:
    return all_results[request.param]


def test_packed_samples_have_the_losses_and_gradients_of_unpacked_ones(results):
    assert results["padding"] == SEQ + 1 - sum(LENGTHS) - 1
    for (loss_a, grad_a), (loss_p, grad_p) in zip(results["alone"], results["packed"],
                                                  strict=True):
        torch.testing.assert_close(loss_p, loss_a, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(grad_p, grad_a, rtol=1e-4, atol=1e-5)
        assert grad_a.abs().max() > 0  # the gradient is real


def test_attention_across_samples_would_be_detected(results):
    # The first sample sees nothing before it either way; the later ones change visibly.
    (first_a, _), *later_a = results["alone"]
    (first_c, _), *later_c = results["crossed"]
    torch.testing.assert_close(first_c, first_a, rtol=1e-5, atol=1e-5)
    for (loss_a, grad_a), (loss_c, grad_c) in zip(later_a, later_c, strict=True):
        assert abs(float(loss_c) - float(loss_a)) > 1e-3
        assert float((grad_c - grad_a).abs().max()) > 1e-4
