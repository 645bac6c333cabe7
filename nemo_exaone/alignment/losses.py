"""Preference losses: one dispatch over sequence log-probabilities of chosen/rejected pairs.

Everything here is a pure function of per-sequence log-probabilities (summed or averaged over
the response tokens, see :func:`sequence_log_probs`) and, for the RPO variants, ground-truth
rewards. Losses are returned PER PAIR (shape [B]): the training loop sums them and divides by
the number of pairs of the whole global batch, so micro-batching and data parallelism do not
change the gradient. The same functions serve offline DPO/SimPO now and online preference
training later (rewards from any reward model plug into the RPO variants).

Notation: ``Δ = (logπ(y_w) − logπ_ref(y_w)) − (logπ(y_l) − logπ_ref(y_l))`` (the implicit
reward margin), ``β`` = ``ref_policy_kl_penalty``, ``s`` = ``gt_reward_scale``, ``r_w, r_l``
the ground-truth rewards of the chosen and rejected responses.

NeMo-Aligner's DPO configuration keys are accepted as they are
(:meth:`PreferenceLossConfig.from_mapping`), so an existing ``dpo:`` section carries over.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F

PREFERENCE_LOSSES = ("dpo", "ipo", "rpo_sq", "rpo_fwd_kl", "rpo_bwd_kl", "simpo")
REFERENCE_FREE = ("simpo",)
NEEDS_REWARDS = ("rpo_sq", "rpo_fwd_kl", "rpo_bwd_kl")

# NeMo-Aligner's ``dpo:`` keys -> our field names.
NEMO_ALIGNER_KEYS = {
    "ref_policy_kl_penalty": "beta",
    "preference_loss": "loss",
    "preference_average_log_probs": "average_log_probs",
    "sft_average_log_probs": "sft_average_log_probs",
    "preference_loss_weight": "preference_loss_weight",
    "sft_loss_weight": "sft_loss_weight",
    "gt_reward_scale": "gt_reward_scale",
}


@dataclass(frozen=True)
class PreferenceLossConfig:
    """Which preference loss, its coefficients, and the optional SFT term on y_w.

    ``beta`` is DPO's KL coefficient for the reference-based losses and SimPO's reward scale
    for ``simpo`` (SimPO's defaults: beta=2.0, gamma=0.5, i.e. gamma/beta=0.25).
    ``sft_average_log_probs=None`` follows ``average_log_probs`` (as NeMo-Aligner does).
    """

    loss: str = "dpo"
    beta: float = 0.1
    average_log_probs: bool = False
    sft_average_log_probs: bool | None = None
    preference_loss_weight: float = 1.0
    sft_loss_weight: float = 0.0
    gt_reward_scale: float = 1.0
    simpo_gamma: float = 0.5

    def __post_init__(self) -> None:
        if self.loss not in PREFERENCE_LOSSES:
            raise ValueError(f"preference loss {self.loss!r} is unknown; valid losses: "
                             f"{', '.join(PREFERENCE_LOSSES)}")
        if self.beta <= 0:
            raise ValueError(f"beta (ref_policy_kl_penalty)={self.beta} must be > 0")
        if self.preference_loss_weight == 0 and self.sft_loss_weight == 0:
            raise ValueError("preference_loss_weight and sft_loss_weight are both 0: "
                             "nothing to train")

    @property
    def uses_reference(self) -> bool:
        """Whether the loss needs reference-policy log-probs (all but SimPO)."""
        return self.loss not in REFERENCE_FREE

    @property
    def sft_average(self) -> bool:
        return self.average_log_probs if self.sft_average_log_probs is None \
            else self.sft_average_log_probs

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> PreferenceLossConfig:
        """From our field names or NeMo-Aligner's keys (both may not name the same field)."""
        ours = {f.name for f in fields(cls)}
        out: dict[str, Any] = {}
        for key, value in values.items():
            name = NEMO_ALIGNER_KEYS.get(key, key)
            if name not in ours:
                raise ValueError(f"preference loss setting {key!r} is unknown; valid: "
                                 f"{', '.join(sorted(ours | set(NEMO_ALIGNER_KEYS)))}")
            if name in out:
                raise ValueError(f"preference loss setting {name!r} given twice (as {key!r} "
                                 "and its alias)")
            out[name] = value
        return cls(**out)


@dataclass
class PreferenceLossOutput:
    """Per-pair tensors [B]; ``loss`` carries the gradient, the others are detached."""

    loss: torch.Tensor  # preference_loss_weight * preference + sft_loss_weight * sft
    preference: torch.Tensor
    sft: torch.Tensor
    chosen_reward: torch.Tensor  # implicit reward (DPO family: logπ - logπ_ref; SimPO: β·avg)
    rejected_reward: torch.Tensor
    accuracy: torch.Tensor  # 1.0 where chosen_reward > rejected_reward


def sequence_log_probs(token_log_probs: torch.Tensor, mask: torch.Tensor, average: bool
                       ) -> torch.Tensor:
    """Per-sequence sum (or mean) of ``token_log_probs`` [B, S] where ``mask`` [B, S] is 1.

    A mean over zero tokens is 0 (the denominator is clamped to 1), not NaN.
    """
    if token_log_probs.shape != mask.shape:
        raise ValueError(f"token log-probs {tuple(token_log_probs.shape)} and mask "
                         f"{tuple(mask.shape)} differ in shape")
    mask = mask.to(token_log_probs.dtype)
    total = (token_log_probs * mask).sum(-1)
    return total / mask.sum(-1).clamp(min=1) if average else total


def _bernoulli_log(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(log σ(x), log σ(−x)): the log-probabilities of the Bernoulli(σ(x)) outcomes."""
    return F.logsigmoid(x), F.logsigmoid(-x)


def preference_loss(cfg: PreferenceLossConfig, chosen: torch.Tensor, rejected: torch.Tensor,
                    ref_chosen: torch.Tensor | None = None,
                    ref_rejected: torch.Tensor | None = None,
                    chosen_gt_reward: torch.Tensor | None = None,
                    rejected_gt_reward: torch.Tensor | None = None,
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(per-pair loss, chosen implicit reward, rejected implicit reward) from sequence
    log-probs [B] of the policy (``chosen``, ``rejected``) and the reference.

    For ``simpo`` ``chosen``/``rejected`` must already be length-normalised (averaged);
    :func:`preference_losses` does that whatever ``average_log_probs`` says.
    """
    name = cfg.loss
    beta = cfg.beta
    if name == "simpo":
        # SimPO, Meng et al. 2024, eq. 6: −log σ(β/|y_w|·logπ(y_w|x) − β/|y_l|·logπ(y_l|x) − γ)
        r_w, r_l = beta * chosen, beta * rejected
        return -F.logsigmoid(r_w - r_l - cfg.simpo_gamma), r_w, r_l
    if name not in PREFERENCE_LOSSES:
        raise ValueError(f"preference loss {name!r} is unknown; valid losses: "
                         f"{', '.join(PREFERENCE_LOSSES)}")
    if ref_chosen is None or ref_rejected is None:
        raise ValueError(f"preference loss {name!r} needs reference log-probs (ref_chosen, "
                         "ref_rejected); only 'simpo' is reference-free")
    r_w, r_l = chosen - ref_chosen, rejected - ref_rejected
    delta = r_w - r_l
    if name == "dpo":
        # DPO, Rafailov et al. 2023, eq. 7: −log σ(β·Δ)
        return -F.logsigmoid(beta * delta), r_w, r_l
    if name == "ipo":
        # IPO, Azar et al. 2023, eq. 17 (empirical IPO): (Δ − 1/(2β))², Δ without β
        return (delta - 1.0 / (2.0 * beta)) ** 2, r_w, r_l
    if chosen_gt_reward is None or rejected_gt_reward is None:
        raise ValueError(f"preference loss {name!r} needs ground-truth rewards "
                         "(chosen_reward, rejected_reward in the data)")
    gt_delta = cfg.gt_reward_scale * (chosen_gt_reward - rejected_gt_reward)
    if name == "rpo_sq":
        # RPO squared distance (Nemotron-4 340B report, sec. 3.4.2 / NeMo-Aligner):
        # (β·Δ − s·(r_w − r_l))²
        return (beta * delta - gt_delta) ** 2, r_w, r_l
    # RPO with a Bernoulli KL between q = σ(β·Δ) (policy) and p = σ(s·(r_w − r_l)) (rewards):
    log_q_w, log_q_l = _bernoulli_log(beta * delta)
    log_p_w, log_p_l = _bernoulli_log(gt_delta)
    if name == "rpo_bwd_kl":
        # backward KL, KL(p || q) = p_w (log p_w − log q_w) + p_l (log p_l − log q_l)
        loss = log_p_w.exp() * (log_p_w - log_q_w) + log_p_l.exp() * (log_p_l - log_q_l)
    else:
        # rpo_fwd_kl: forward KL, KL(q || p) = q_w (log q_w − log p_w) + q_l (log q_l − log p_l)
        loss = log_q_w.exp() * (log_q_w - log_p_w) + log_q_l.exp() * (log_q_l - log_p_l)
    return loss, r_w, r_l


def preference_losses(cfg: PreferenceLossConfig,
                      chosen_token_log_probs: torch.Tensor, chosen_mask: torch.Tensor,
                      rejected_token_log_probs: torch.Tensor, rejected_mask: torch.Tensor,
                      ref_chosen: torch.Tensor | None = None,
                      ref_rejected: torch.Tensor | None = None,
                      chosen_gt_reward: torch.Tensor | None = None,
                      rejected_gt_reward: torch.Tensor | None = None) -> PreferenceLossOutput:
    """The configured preference loss plus the optional SFT term, per pair.

    ``*_token_log_probs`` [B, S] are the policy's log-probs of each response token, masks are
    1 on the response tokens. ``ref_chosen``/``ref_rejected`` are the REFERENCE's sequence
    log-probs [B], reduced the same way (sum, or mean when ``average_log_probs``), e.g. from a
    cache. SFT term (NeMo-Aligner): ``−logπ(y_w)`` (summed, or averaged when
    ``sft_average_log_probs``).
    """
    average = cfg.average_log_probs or cfg.loss == "simpo"  # SimPO is length-normalised
    chosen = sequence_log_probs(chosen_token_log_probs, chosen_mask, average)
    rejected = sequence_log_probs(rejected_token_log_probs, rejected_mask, average)
    pref, r_w, r_l = preference_loss(cfg, chosen, rejected, ref_chosen, ref_rejected,
                                     chosen_gt_reward, rejected_gt_reward)
    if cfg.sft_loss_weight:
        sft = -sequence_log_probs(chosen_token_log_probs, chosen_mask, cfg.sft_average)
    else:
        sft = torch.zeros_like(pref)
    loss = cfg.preference_loss_weight * pref + cfg.sft_loss_weight * sft
    r_w, r_l = r_w.detach(), r_l.detach()
    return PreferenceLossOutput(loss=loss, preference=pref.detach(), sft=sft.detach(),
                                chosen_reward=r_w, rejected_reward=r_l,
                                accuracy=(r_w > r_l).float())


def bradley_terry_loss(chosen_scores: torch.Tensor, rejected_scores: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Reward-model loss per pair, ``−log σ(s_w − s_l)`` (Bradley & Terry 1952; Ouyang et al.
    2022, eq. 1), and the pair accuracy (1.0 where ``s_w > s_l``)."""
    margin = chosen_scores.float() - rejected_scores.float()
    return -F.logsigmoid(margin), (margin > 0).float().detach()
