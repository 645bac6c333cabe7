"""Losses over vocab-parallel logits (each tensor-parallel rank holds a slice of the vocabulary).

Megatron's output layer leaves logits split along the vocabulary under tensor parallelism.
A softmax over the full vocabulary needs the max and the sum of exponentials across the TP
group (two all-reduces); the per-token loss is then identical on every TP rank, and the
gradient of each rank's slice is computed locally from the saved probabilities, as in
Megatron's ``vocab_parallel_cross_entropy``. Every function takes the TP ``group`` (None: no
tensor parallelism) and works in fp32 whatever the logits' dtype.

- :func:`cross_entropy`: -log softmax(z)[target] for hard targets.
- :func:`kl_divergence`: KL(p_teacher || p_student) with both softmaxes at temperature T;
  d/dz_student = (p_student - p_teacher) / T.
- :func:`argmax`: the teacher's top-1 token id over the full vocabulary.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def _world(group) -> int:
    return 1 if group is None else dist.get_world_size(group)


def _all_reduce(tensor: torch.Tensor, op, group) -> torch.Tensor:
    if _world(group) > 1:
        dist.all_reduce(tensor, op=op, group=group)
    return tensor


def _vocab_start(local_vocab: int, group) -> int:
    return 0 if _world(group) == 1 else dist.get_rank(group) * local_vocab


def _softmax_parts(z: torch.Tensor, group) -> tuple[torch.Tensor, torch.Tensor]:
    """Shifted exponentials of the local slice and the global log-normaliser (per row)."""
    zmax = _all_reduce(z.max(dim=-1, keepdim=True).values, dist.ReduceOp.MAX, group)
    exp = torch.exp(z - zmax)
    total = _all_reduce(exp.sum(dim=-1, keepdim=True), dist.ReduceOp.SUM, group)
    return exp, zmax + torch.log(total)


class _CrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, target, group):  # noqa: D102
        z = logits.float()
        _, log_norm = _softmax_parts(z, group)
        vocab = z.shape[-1]
        local = target - _vocab_start(vocab, group)
        inside = (local >= 0) & (local < vocab)
        local = torch.where(inside, local, torch.zeros_like(local))
        picked = torch.gather(z, -1, local.unsqueeze(-1)).squeeze(-1) * inside
        picked = _all_reduce(picked.contiguous(), dist.ReduceOp.SUM, group)
        probs = torch.exp(z - log_norm)
        ctx.save_for_backward(probs, local, inside)
        ctx.logits_dtype = logits.dtype
        return log_norm.squeeze(-1) - picked

    @staticmethod
    def backward(ctx, grad_out):  # noqa: D102
        probs, local, inside = ctx.saved_tensors
        grad = probs.clone()
        grad.scatter_add_(-1, local.unsqueeze(-1), -inside.to(grad.dtype).unsqueeze(-1))
        return (grad * grad_out.unsqueeze(-1)).to(ctx.logits_dtype), None, None


class _KLDivergence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, student_logits, teacher_logits, temperature, group):  # noqa: D102
        zs = student_logits.float() / temperature
        zt = teacher_logits.detach().float() / temperature
        _, norm_s = _softmax_parts(zs, group)
        _, norm_t = _softmax_parts(zt, group)
        log_ps, log_pt = zs - norm_s, zt - norm_t
        pt = torch.exp(log_pt)
        kl = _all_reduce((pt * (log_pt - log_ps)).sum(-1), dist.ReduceOp.SUM, group)
        ctx.save_for_backward(torch.exp(log_ps), pt)
        ctx.temperature = temperature
        ctx.logits_dtype = student_logits.dtype
        return kl

    @staticmethod
    def backward(ctx, grad_out):  # noqa: D102
        ps, pt = ctx.saved_tensors
        grad = (ps - pt) / ctx.temperature * grad_out.unsqueeze(-1)
        return grad.to(ctx.logits_dtype), None, None, None


def cross_entropy(logits: torch.Tensor, target: torch.Tensor, group=None) -> torch.Tensor:
    """Per-token CE of vocab-parallel ``logits`` [..., V/tp] against global ids ``target``."""
    return _CrossEntropy.apply(logits, target, group)


def kl_divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                  temperature: float = 1.0, group=None) -> torch.Tensor:
    """Per-token KL(softmax(teacher/T) || softmax(student/T)); no gradient to the teacher."""
    return _KLDivergence.apply(student_logits, teacher_logits, float(temperature), group)


@torch.no_grad()
def argmax(logits: torch.Tensor, group=None) -> torch.Tensor:
    """Global vocabulary id of the largest logit (lowest id on ties), per token."""
    values, index = logits.float().max(dim=-1)
    index = index + _vocab_start(logits.shape[-1], group)
    world = _world(group)
    if world == 1:
        return index
    all_values = [torch.empty_like(values) for _ in range(world)]
    all_index = [torch.empty_like(index) for _ in range(world)]
    dist.all_gather(all_values, values.contiguous(), group=group)
    dist.all_gather(all_index, index.contiguous(), group=group)
    stacked_v, stacked_i = torch.stack(all_values), torch.stack(all_index)
    best = stacked_v.argmax(dim=0, keepdim=True)  # first rank holding the max: lowest ids
    return torch.gather(stacked_i, 0, best).squeeze(0)
