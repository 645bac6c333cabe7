"""Objectives the one training loop plugs in: a forward step plus its loss.

An objective turns a micro-batch into ``(output, loss_fn)`` for Megatron's schedules (and
may bring a ``collate`` for its batch format; the causal-LM one is the default); the
loss function returns ``(loss_sum, num_tokens, report)`` so that the schedules run in
per-token mode (``calculate_per_token_loss``): gradients are the token-mean over the whole
global batch, whatever the micro-batching or data-parallel layout. ``report[loss_key]`` is
``[loss_sum, num_tokens]``; the loop sums it over micro-batches and ranks.

Later stages (SFT, reward model, DPO) add objectives with their own batch formats; the loop
does not change.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial

import torch

from nemo_exaone.training import vocab_parallel
from nemo_exaone.training.batches import Batch


def to_device(batch: Batch) -> Batch:
    """The micro-batch on this rank's GPU (a no-op on CPU)."""
    if not torch.cuda.is_available():
        return batch
    return {k: v.cuda(non_blocking=True) for k, v in batch.items()}


def _isolated(batch: Batch, spec: str | None):
    """Model inputs with packed samples (``document_ids`` in the batch) kept from attending
    to each other (:mod:`nemo_exaone.model.packed_attention`)."""
    from nemo_exaone.model.packed_attention import isolation_inputs
    from nemo_exaone.model.spec import default_spec_name

    return isolation_inputs(batch, spec or default_spec_name())


def masked_sum(token_losses: torch.Tensor, loss_mask: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of losses where mask is 1, number of such tokens as int)."""
    mask = loss_mask.reshape(-1).float()
    return (token_losses.float().reshape(-1) * mask).sum(), mask.sum().to(torch.int)


class LanguageModelObjective:
    """Next-token cross-entropy (pretraining, continued pretraining, annealing)."""

    loss_key = "lm loss"

    def __init__(self, spec: str | None = None) -> None:
        # Fault injection (safety.inject_nan_at_steps): poisons the loss of the next step.
        self.inject_nonfinite = False
        self.spec = spec  # layer spec: decides how packed samples are kept apart

    def forward_step(self, data_iterator: Iterator[Batch], model):
        batch = to_device(next(data_iterator))
        tokens, positions, labels, kwargs = _isolated(batch, self.spec)
        output = model(tokens, positions, labels=labels, **kwargs)
        return output, partial(self._loss, batch["loss_mask"])

    def _loss(self, loss_mask: torch.Tensor, token_losses: torch.Tensor):
        total, count = masked_sum(token_losses, loss_mask)
        if self.inject_nonfinite:
            total = total * float("nan")
        return total, count, {self.loss_key: torch.stack([total.detach(), count.float()])}


@dataclass(frozen=True)
class DistillationLossConfig:
    loss: str = "kd"  # kd | afm
    alpha: float = 0.5
    temperature: float = 1.0
    afm_teacher_weight: float = 0.9


def distillation_token_losses(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                              labels: torch.Tensor, cfg: DistillationLossConfig, group=None
                              ) -> dict[str, torch.Tensor]:
    """Per-token losses from vocab-parallel logits [..., V/tp] and labels [...].

    kd:  alpha * CE(student, label) + (1 - alpha) * T^2 * KL(teacher_T || student_T)
         (Hinton et al.: T^2 keeps the soft-target gradients on the CE scale).
    afm: CE against the target w * onehot(teacher top-1) + (1 - w) * onehot(label), which is
         w * CE(student, top-1) + (1 - w) * CE(student, label) (CE is linear in the target).
    """
    ce = vocab_parallel.cross_entropy(student_logits, labels, group)
    if cfg.loss == "kd":
        t = cfg.temperature
        kl = vocab_parallel.kl_divergence(student_logits, teacher_logits, t, group)
        total = cfg.alpha * ce + (1.0 - cfg.alpha) * (t * t) * kl
        return {"loss": total, "ce": ce.detach(), "kl": kl.detach()}
    if cfg.loss == "afm":
        top1 = vocab_parallel.argmax(teacher_logits, group)
        ce_teacher = vocab_parallel.cross_entropy(student_logits, top1, group)
        w = cfg.afm_teacher_weight
        total = w * ce_teacher + (1.0 - w) * ce
        agree = (top1 == labels).float()
        return {"loss": total, "ce": ce.detach(), "teacher_agreement": agree}
    raise ValueError(f"distill.loss={cfg.loss!r}: choose 'kd' or 'afm'")


class DistillationObjective:
    """Student trained against a frozen teacher (same tokenizer, any size, same TP group)."""

    loss_key = "distill loss"

    def __init__(self, teacher: torch.nn.Module, cfg: DistillationLossConfig,
                 spec: str | None = None) -> None:
        self.teacher = teacher
        self.cfg = cfg
        self.inject_nonfinite = False
        self.spec = spec

    def forward_step(self, data_iterator: Iterator[Batch], model):
        batch = to_device(next(data_iterator))
        tokens, positions, labels, kwargs = _isolated(batch, self.spec)
        batch = {**batch, "labels": labels}  # flattened with the tokens in the thd layout
        with torch.no_grad():
            teacher_logits = self.teacher(tokens, positions, **kwargs)
        student_logits = model(tokens, positions, **kwargs)
        return student_logits, partial(self._loss, batch, teacher_logits)

    def _loss(self, batch: Batch, teacher_logits: torch.Tensor, student_logits: torch.Tensor):
        from megatron.core import parallel_state

        group = parallel_state.get_tensor_model_parallel_group()
        if parallel_state.get_tensor_model_parallel_world_size() == 1:
            group = None
        parts = distillation_token_losses(student_logits, teacher_logits, batch["labels"],
                                          self.cfg, group)
        total, count = masked_sum(parts["loss"], batch["loss_mask"])
        if self.inject_nonfinite:
            total = total * float("nan")
        ce_sum, _ = masked_sum(parts["ce"], batch["loss_mask"])
        report = {self.loss_key: torch.stack([total.detach(), count.float()]),
                  "lm loss": torch.stack([ce_sum, count.float()])}
        return total, count, report
