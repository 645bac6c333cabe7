"""Distillation losses: hand-computed values on small tensors, gradients, and TP=2 == TP=1."""

from __future__ import annotations

import math

import pytest
import torch

from nemo_exaone.runtime.launch import spawn_local
from nemo_exaone.training import vocab_parallel
from nemo_exaone.training.objectives import DistillationLossConfig, distillation_token_losses

STUDENT = torch.tensor([[1.0, 2.0, 0.5, -1.0], [0.0, 0.0, 3.0, 1.0]])
TEACHER = torch.tensor([[2.0, 1.0, 0.0, 0.0], [0.5, -0.5, 1.0, 2.5]])
LABELS = torch.tensor([1, 3])


def _softmax(row: list[float], t: float = 1.0) -> list[float]:
    exps = [math.exp(x / t) for x in row]
    return [e / sum(exps) for e in exps]


def test_cross_entropy_matches_hand_computation():
    ce = vocab_parallel.cross_entropy(STUDENT, LABELS)
    expected = [-math.log(_softmax(r)[y]) for r, y in zip(STUDENT.tolist(), LABELS.tolist())]
    assert ce.tolist() == pytest.approx(expected, rel=1e-6)


def test_kl_matches_hand_computation_at_temperature():
    t = 2.0
    kl = vocab_parallel.kl_divergence(STUDENT, TEACHER, t)
    expected = []
    for s, te in zip(STUDENT.tolist(), TEACHER.tolist()):
        ps, pt = _softmax(s, t), _softmax(te, t)
        expected.append(sum(q * math.log(q / p) for q, p in zip(pt, ps)))
    assert kl.tolist() == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert vocab_parallel.kl_divergence(TEACHER, TEACHER, t).abs().max() < 1e-6


def test_kd_and_afm_losses_match_hand_computation():
    alpha, t = 0.3, 2.0
    kd = distillation_token_losses(STUDENT, TEACHER, LABELS,
                                   DistillationLossConfig("kd", alpha=alpha, temperature=t))
    afm = distillation_token_losses(STUDENT, TEACHER, LABELS,
                                    DistillationLossConfig("afm", afm_teacher_weight=0.9))
    for i, (s, te, label) in enumerate(zip(STUDENT.tolist(), TEACHER.tolist(),
                                           LABELS.tolist())):
        ps1, ps_t, pt_t = _softmax(s), _softmax(s, t), _softmax(te, t)
        ce = -math.log(ps1[label])
        kl = sum(q * math.log(q / p) for q, p in zip(pt_t, ps_t))
        assert kd["loss"][i].item() == pytest.approx(alpha * ce + (1 - alpha) * t * t * kl,
                                                     rel=1e-5)
        top1 = max(range(4), key=lambda v, te=te: te[v])
        # target = 0.9 * onehot(teacher top-1) + 0.1 * onehot(label)
        target = [0.9 * (v == top1) + 0.1 * (v == label) for v in range(4)]
        soft_ce = -sum(q * math.log(p) for q, p in zip(target, ps1))
        assert afm["loss"][i].item() == pytest.approx(soft_ce, rel=1e-6)


def test_gradients_match_autograd_reference():
    t = 1.5
    student = STUDENT.clone().requires_grad_(True)
    weights = torch.tensor([0.7, 1.3])
    (vocab_parallel.kl_divergence(student, TEACHER, t) * weights).sum().backward()
    ref_student = STUDENT.clone().requires_grad_(True)
    log_ps = torch.log_softmax(ref_student / t, -1)
    log_pt = torch.log_softmax(TEACHER / t, -1)
    ((log_pt.exp() * (log_pt - log_ps)).sum(-1) * weights).sum().backward()
    torch.testing.assert_close(student.grad, ref_student.grad, rtol=1e-5, atol=1e-7)

    student.grad = None
    ref_student.grad = None
    (vocab_parallel.cross_entropy(student, LABELS) * weights).sum().backward()
    (torch.nn.functional.cross_entropy(ref_student, LABELS, reduction="none")
     * weights).sum().backward()
    torch.testing.assert_close(student.grad, ref_student.grad, rtol=1e-5, atol=1e-7)


def _losses_and_grads_on_tp2(seed: int) -> dict:
    """Each of two ranks holds half the vocabulary; returns full-vocab losses and grads."""
    import torch.distributed as dist

    dist.init_process_group("gloo")
    try:
        gen = torch.Generator().manual_seed(seed)
        student = torch.randn(3, 5, 8, generator=gen)
        teacher = torch.randn(3, 5, 8, generator=gen) * 2
        labels = torch.randint(0, 8, (3, 5), generator=gen)
        rank = dist.get_rank()
        local = student[..., rank * 4:(rank + 1) * 4].clone().requires_grad_(True)
        out = {}
        for loss in ("kd", "afm"):
            cfg = DistillationLossConfig(loss, alpha=0.4, temperature=2.0)
            parts = distillation_token_losses(local, teacher[..., rank * 4:(rank + 1) * 4],
                                              labels, cfg, group=dist.group.WORLD)
            local.grad = None
            parts["loss"].sum().backward()
            grads = [torch.empty_like(local.grad) for _ in range(2)]
            dist.all_gather(grads, local.grad.contiguous())
            out[loss] = (parts["loss"].detach(), torch.cat(grads, dim=-1))
        out["argmax"] = vocab_parallel.argmax(teacher[..., rank * 4:(rank + 1) * 4],
                                              dist.group.WORLD)
        return out
    finally:
        dist.destroy_process_group()


def test_vocab_parallel_tp2_equals_tp1():
    results = spawn_local(_losses_and_grads_on_tp2, 2, 7)
    gen = torch.Generator().manual_seed(7)
    student = torch.randn(3, 5, 8, generator=gen)
    teacher = torch.randn(3, 5, 8, generator=gen) * 2
    labels = torch.randint(0, 8, (3, 5), generator=gen)
    for loss in ("kd", "afm"):
        full = student.clone().requires_grad_(True)
        cfg = DistillationLossConfig(loss, alpha=0.4, temperature=2.0)
        reference = distillation_token_losses(full, teacher, labels, cfg)
        reference["loss"].sum().backward()
        for rank_result in results:
            value, grad = rank_result[loss]
            torch.testing.assert_close(value, reference["loss"].detach(), rtol=1e-6, atol=1e-6)
            torch.testing.assert_close(grad, full.grad, rtol=1e-6, atol=1e-7)
    assert torch.equal(results[0]["argmax"], teacher.argmax(-1))
