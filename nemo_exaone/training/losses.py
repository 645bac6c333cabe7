"""Language-model loss as a pure function of per-token losses and a mask.

Stages differ by the loss they plug into the one training loop; every loss returns
``(scalar_loss, {"name": detached_value, ...})`` as Megatron-Core's schedules expect.
"""

from __future__ import annotations

import torch


def masked_token_mean(token_losses: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``token_losses`` over positions where ``loss_mask`` is 1."""
    mask = loss_mask.to(token_losses.dtype).reshape(-1)
    return (token_losses.float().reshape(-1) * mask).sum() / mask.sum().clamp(min=1)


def lm_loss(loss_mask: torch.Tensor, output_tensor: torch.Tensor):
    """Cross-entropy LM loss; ``output_tensor`` is the model's per-token loss [b, s]."""
    loss = masked_token_mean(output_tensor, loss_mask)
    return loss, {"lm loss": loss.detach().clone()}
