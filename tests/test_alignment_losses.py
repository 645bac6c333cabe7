"""Preference losses against closed forms computed here with ``math`` (not the module)."""

from __future__ import annotations

import math

import pytest
import torch

from nemo_exaone.alignment.losses import (
    PREFERENCE_LOSSES,
    PreferenceLossConfig,
    bradley_terry_loss,
    preference_losses,
)


def _sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# Two pairs. Token log-probs of the policy; response masks (the chosen of pair 0 has a
# masked-out token that must not count).
CHOSEN_TOK = [[-1.0, -2.0, -9.0], [-0.5, -0.5, -0.5]]
CHOSEN_MASK = [[1, 1, 0], [1, 1, 1]]
REJECTED_TOK = [[-3.0, -1.0, -2.0], [-4.0, -7.0, -7.0]]
REJECTED_MASK = [[1, 1, 1], [1, 0, 0]]
REF_CHOSEN_SUM = [-2.5, -2.0]
REF_REJECTED_SUM = [-5.0, -3.0]
REF_CHOSEN_AVG = [-1.25, -0.6]
REF_REJECTED_AVG = [-1.8, -3.5]
GT_W, GT_L = [2.0, 0.5], [1.0, 1.5]
BETA, SCALE, GAMMA = 0.3, 0.7, 0.4


def _by_hand(loss: str, average: bool) -> list[float]:
    """Closed forms, pair by pair, from the literal numbers above."""
    if average or loss == "simpo":
        pw = [(-1.0 - 2.0) / 2, (-0.5 * 3) / 3]
        pl = [(-3.0 - 1.0 - 2.0) / 3, -4.0]
        rw, rl = REF_CHOSEN_AVG, REF_REJECTED_AVG
    else:
        pw = [-3.0, -1.5]
        pl = [-6.0, -4.0]
        rw, rl = REF_CHOSEN_SUM, REF_REJECTED_SUM
    out = []
    for i in range(2):
        delta = (pw[i] - rw[i]) - (pl[i] - rl[i])
        gt = SCALE * (GT_W[i] - GT_L[i])
        if loss == "dpo":
            out.append(-math.log(_sig(BETA * delta)))
        elif loss == "ipo":
            out.append((delta - 1 / (2 * BETA)) ** 2)
        elif loss == "rpo_sq":
            out.append((BETA * delta - gt) ** 2)
        elif loss in ("rpo_fwd_kl", "rpo_bwd_kl"):
            q, p = _sig(BETA * delta), _sig(gt)
            if loss == "rpo_bwd_kl":  # KL(p || q)
                out.append(p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q)))
            else:  # KL(q || p)
                out.append(q * math.log(q / p) + (1 - q) * math.log((1 - q) / (1 - p)))
        elif loss == "simpo":
            out.append(-math.log(_sig(BETA * pw[i] - BETA * pl[i] - GAMMA)))
    return out


def _run(cfg: PreferenceLossConfig):
    t = torch.tensor
    ref_w = REF_CHOSEN_AVG if cfg.average_log_probs else REF_CHOSEN_SUM
    ref_l = REF_REJECTED_AVG if cfg.average_log_probs else REF_REJECTED_SUM
    return preference_losses(
        cfg, t(CHOSEN_TOK, dtype=torch.float64), t(CHOSEN_MASK),
        t(REJECTED_TOK, dtype=torch.float64), t(REJECTED_MASK),
        ref_chosen=t(ref_w, dtype=torch.float64), ref_rejected=t(ref_l, dtype=torch.float64),
        chosen_gt_reward=t(GT_W, dtype=torch.float64),
        rejected_gt_reward=t(GT_L, dtype=torch.float64))


@pytest.mark.parametrize("average", [False, True])
@pytest.mark.parametrize("loss", PREFERENCE_LOSSES)
def test_each_loss_matches_its_closed_form(loss: str, average: bool) -> None:
    cfg = PreferenceLossConfig(loss=loss, beta=BETA, average_log_probs=average,
                               gt_reward_scale=SCALE, simpo_gamma=GAMMA)
    out = _run(cfg)
    expected = _by_hand(loss, average)
    assert out.loss.tolist() == pytest.approx(expected, rel=1e-12, abs=1e-12)
    assert out.loss.shape == (2,)
    assert out.preference.tolist() == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_losses_differ_from_each_other() -> None:
    """The fixture separates the variants (a dispatch falling into the wrong branch fails)."""
    values = {name: tuple(round(v, 9) for v in _by_hand(name, False))
              for name in PREFERENCE_LOSSES}
    assert len(set(values.values())) == len(PREFERENCE_LOSSES)


def test_sft_term_and_weights() -> None:
    cfg = PreferenceLossConfig(loss="dpo", beta=BETA, preference_loss_weight=0.5,
                               sft_loss_weight=2.0, sft_average_log_probs=True)
    out = _run(cfg)
    dpo = _by_hand("dpo", False)
    sft = [3.0 / 2, 1.5 / 3]  # −mean logπ(y_w) over its response tokens
    assert out.sft.tolist() == pytest.approx(sft)
    assert out.loss.tolist() == pytest.approx([0.5 * d + 2.0 * s for d, s in zip(dpo, sft)])
    summed = _run(PreferenceLossConfig(loss="dpo", beta=BETA, sft_loss_weight=1.0))
    assert summed.sft.tolist() == pytest.approx([3.0, 1.5])  # follows average_log_probs=False


def test_implicit_rewards_and_accuracy() -> None:
    out = _run(PreferenceLossConfig(loss="dpo", beta=BETA))
    # pair 0: r_w = −3 − (−2.5) = −0.5, r_l = −6 − (−5) = −1 -> chosen ahead
    # pair 1: r_w = −1.5 − (−2) = 0.5, r_l = −4 − (−3) = −1 -> chosen ahead
    assert out.chosen_reward.tolist() == pytest.approx([-0.5, 0.5])
    assert out.rejected_reward.tolist() == pytest.approx([-1.0, -1.0])
    assert out.accuracy.tolist() == [1.0, 1.0]
    swapped = preference_losses(
        PreferenceLossConfig(loss="dpo", beta=BETA),
        torch.tensor(REJECTED_TOK), torch.tensor(REJECTED_MASK),
        torch.tensor(CHOSEN_TOK), torch.tensor(CHOSEN_MASK),
        torch.tensor(REF_REJECTED_SUM), torch.tensor(REF_CHOSEN_SUM))
    assert swapped.accuracy.tolist() == [0.0, 0.0]


def test_gradient_flows_to_policy_log_probs() -> None:
    tok = torch.tensor(CHOSEN_TOK, requires_grad=True)
    out = preference_losses(PreferenceLossConfig(loss="dpo", beta=BETA), tok,
                            torch.tensor(CHOSEN_MASK), torch.tensor(REJECTED_TOK),
                            torch.tensor(REJECTED_MASK), torch.tensor(REF_CHOSEN_SUM),
                            torch.tensor(REF_REJECTED_SUM))
    out.loss.sum().backward()
    # d/dlogπ(y_w) of −log σ(βΔ) = −β (1 − σ(βΔ)); zero on the masked-out token.
    delta0 = (-3.0 + 2.5) - (-6.0 + 5.0)
    g = -BETA * (1 - _sig(BETA * delta0))
    assert tok.grad[0].tolist() == pytest.approx([g, g, 0.0])


def test_unknown_loss_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="'kto' is unknown.*dpo, ipo, rpo_sq, rpo_fwd_kl, "
                       "rpo_bwd_kl, simpo"):
        PreferenceLossConfig(loss="kto")


def test_missing_inputs_are_named() -> None:
    with pytest.raises(ValueError, match="needs reference log-probs"):
        preference_losses(PreferenceLossConfig(loss="dpo"), torch.zeros(1, 2),
                          torch.ones(1, 2), torch.zeros(1, 2), torch.ones(1, 2))
    with pytest.raises(ValueError, match="needs ground-truth rewards"):
        preference_losses(PreferenceLossConfig(loss="rpo_sq"), torch.zeros(1, 2),
                          torch.ones(1, 2), torch.zeros(1, 2), torch.ones(1, 2),
                          torch.zeros(1), torch.zeros(1))
    # SimPO needs neither.
    out = preference_losses(PreferenceLossConfig(loss="simpo"), torch.zeros(1, 2),
                            torch.ones(1, 2), torch.zeros(1, 2), torch.ones(1, 2))
    assert out.loss.tolist() == pytest.approx([-math.log(_sig(-0.5))])


def test_nemo_aligner_keys_are_accepted() -> None:
    cfg = PreferenceLossConfig.from_mapping({
        "ref_policy_kl_penalty": 0.2, "preference_loss": "rpo_bwd_kl",
        "preference_average_log_probs": True, "sft_average_log_probs": False,
        "preference_loss_weight": 0.9, "sft_loss_weight": 0.1, "gt_reward_scale": 3.0})
    assert cfg == PreferenceLossConfig(loss="rpo_bwd_kl", beta=0.2, average_log_probs=True,
                                       sft_average_log_probs=False, preference_loss_weight=0.9,
                                       sft_loss_weight=0.1, gt_reward_scale=3.0)
    with pytest.raises(ValueError, match="'label_smoothing' is unknown"):
        PreferenceLossConfig.from_mapping({"label_smoothing": 0.1})
    with pytest.raises(ValueError, match="'beta' given twice"):
        PreferenceLossConfig.from_mapping({"beta": 0.1, "ref_policy_kl_penalty": 0.2})
    with pytest.raises(ValueError, match="both 0"):
        PreferenceLossConfig(preference_loss_weight=0.0)


def test_bradley_terry_closed_form() -> None:
    loss, acc = bradley_terry_loss(torch.tensor([2.0, -1.0, 0.5]), torch.tensor([1.0, 1.0, 0.5]))
    assert loss.tolist() == pytest.approx([-math.log(_sig(1.0)), -math.log(_sig(-2.0)),
                                           math.log(2.0)])
    assert acc.tolist() == [1.0, 0.0, 0.0]
