"""Distillation losses on model-shaped logits [batch, seq, vocab] and the parts the objective
logs, checked in-process against PyTorch's own functions.

``make mutation`` found the earlier tests blind to axis mistakes that only show beyond 2-D
logits (``scatter_add_(+1, ...)`` equals ``-1`` on a matrix) and to the ``ce`` /
``kl`` / ``teacher_agreement`` entries the distillation objective logs and masks.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nemo_exaone.training import vocab_parallel
from nemo_exaone.training.objectives import DistillationLossConfig, distillation_token_losses

GEN = torch.Generator().manual_seed(3)
STUDENT = torch.randn(2, 5, 7, generator=GEN)
TEACHER = torch.randn(2, 5, 7, generator=GEN) * 2
LABELS = torch.randint(0, 7, (2, 5), generator=GEN)
WEIGHTS = torch.rand(2, 5, generator=GEN) + 0.5  # distinct per token: a misplaced axis shows


def _reference_ce(logits: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.reshape(-1, 7), LABELS.reshape(-1),
                           reduction="none").reshape(2, 5)


def _reference_kl(student: torch.Tensor, t: float) -> torch.Tensor:
    log_ps, log_pt = F.log_softmax(student / t, -1), F.log_softmax(TEACHER / t, -1)
    return (log_pt.exp() * (log_pt - log_ps)).sum(-1)


def test_cross_entropy_value_and_gradient_on_3d_logits():
    ours, ref = (STUDENT.clone().requires_grad_(True) for _ in range(2))
    loss = vocab_parallel.cross_entropy(ours, LABELS)
    torch.testing.assert_close(loss, _reference_ce(ref), rtol=1e-6, atol=1e-6)
    (loss * WEIGHTS).sum().backward()
    (_reference_ce(ref) * WEIGHTS).sum().backward()
    torch.testing.assert_close(ours.grad, ref.grad, rtol=1e-5, atol=1e-7)


def test_kl_value_and_gradient_on_3d_logits():
    t = 2.0
    ours, ref = (STUDENT.clone().requires_grad_(True) for _ in range(2))
    kl = vocab_parallel.kl_divergence(ours, TEACHER, t)
    torch.testing.assert_close(kl, _reference_kl(ref, t), rtol=1e-5, atol=1e-6)
    (kl * WEIGHTS).sum().backward()
    (_reference_kl(ref, t) * WEIGHTS).sum().backward()
    torch.testing.assert_close(ours.grad, ref.grad, rtol=1e-5, atol=1e-7)


def test_argmax_on_3d_logits():
    assert torch.equal(vocab_parallel.argmax(TEACHER), TEACHER.argmax(-1))


@pytest.mark.parametrize("loss", ["kd", "afm"])
def test_logged_parts_are_the_plain_cross_entropy_and_its_companions(loss):
    cfg = DistillationLossConfig(loss, alpha=0.3, temperature=2.0)
    parts = distillation_token_losses(STUDENT, TEACHER, LABELS, cfg)
    torch.testing.assert_close(parts["ce"], _reference_ce(STUDENT), rtol=1e-6, atol=1e-6)
    if loss == "kd":
        torch.testing.assert_close(parts["kl"], _reference_kl(STUDENT, 2.0), rtol=1e-5,
                                   atol=1e-6)
        assert set(parts) == {"loss", "ce", "kl"}
    else:
        agree = (TEACHER.argmax(-1) == LABELS).float()
        assert torch.equal(parts["teacher_agreement"], agree)
        assert set(parts) == {"loss", "ce", "teacher_agreement"}
