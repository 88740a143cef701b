"""Losses on unpaired examples (a completion and whether it is desirable): KTO, and RFT's NLL."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dpo_exp.losses.base import LossOutput, check_beta, check_shapes


def kto_loss(
    policy_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    desirable: torch.Tensor,
    kl_baseline: torch.Tensor,
    *,
    beta: float,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> LossOutput:
    """Kahneman-Tversky Optimization (KTO), unpaired.

    With r = policy - ref and reference point z0 = kl_baseline (a scalar, treated as a
    constant and detached here):
      desirable:   loss = w_D * (1 - sigmoid(beta * (r - z0)))
      undesirable: loss = w_U * (1 - sigmoid(beta * (z0 - r)))

    Ethayarajh, Xu, Muennighoff, Jurafsky, Kiela (2024), arXiv:2402.01306.
    Log-probs: SUMMED over completion tokens. ``desirable`` is a bool tensor (B,).
    ``kl_baseline`` is computed (e.g. from mismatched prompt/completion pairs, clamped at 0)
    and all-reduced by the caller; this function holds no state.
    Rewards: beta * r of the desirable (chosen_rewards) and undesirable (rejected_rewards)
    examples; either may be empty. metrics: kl = z0 (scalar).
    """
    check_beta(beta)
    if desirable_weight < 0 or undesirable_weight < 0:
        raise ValueError(
            "desirable_weight and undesirable_weight must be >= 0, "
            f"got {desirable_weight} and {undesirable_weight}"
        )
    check_shapes(policy_logps, ref_logps, desirable)
    if desirable.dtype != torch.bool:
        raise ValueError(f"desirable must be a bool tensor, got dtype {desirable.dtype}")
    if kl_baseline.numel() != 1:
        raise ValueError(f"kl_baseline must be a scalar, got shape {tuple(kl_baseline.shape)}")
    z0 = kl_baseline.detach().reshape(())
    r = policy_logps - ref_logps
    loss = torch.where(
        desirable,
        desirable_weight * (1 - torch.sigmoid(beta * (r - z0))),
        undesirable_weight * (1 - torch.sigmoid(beta * (z0 - r))),
    )
    rewards = (beta * r).detach()
    return LossOutput(
        loss=loss,
        chosen_rewards=rewards[desirable],
        rejected_rewards=rewards[~desirable],
        metrics={"kl": z0},
    )


def bco_loss(
    policy_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    desirable: torch.Tensor,
    reward_shift: torch.Tensor,
    *,
    beta: float,
) -> LossOutput:
    """Binary Classifier Optimization (BCO), unpaired: a logistic classifier of desirable examples
    whose logit is the implicit reward less a running mean of the rewards.

    With u = beta * (policy - ref) and delta = `reward_shift` (a scalar, detached here):
      desirable:   loss = -logsigmoid(u - delta)
      undesirable: loss = -logsigmoid(-(u - delta))

    Jung, Park, Kim, Kim, Kim (2024), "Binary Classifier Optimization for Large Language Model
    Alignment", arXiv:2404.04656, Eq. (8) without its density-ratio weights (TRL's former
    `BCOTrainer` without `prompt_sample_size`). delta is the mean of every reward seen in training
    so far, all processes and this batch included; the caller keeps it (as KTO's reference point).
    Log-probs: SUMMED. Rewards: u of the desirable / undesirable examples. metrics: reward_shift.
    """
    check_beta(beta)
    check_shapes(policy_logps, ref_logps, desirable)
    if desirable.dtype != torch.bool:
        raise ValueError(f"desirable must be a bool tensor, got dtype {desirable.dtype}")
    if reward_shift.numel() != 1:
        raise ValueError(f"reward_shift must be a scalar, got shape {tuple(reward_shift.shape)}")
    delta = reward_shift.detach().reshape(())
    rewards = beta * (policy_logps - ref_logps)
    logits = rewards - delta
    loss = torch.where(desirable, -F.logsigmoid(logits), -F.logsigmoid(-logits))
    return LossOutput(
        loss=loss,
        chosen_rewards=rewards.detach()[desirable],
        rejected_rewards=rewards.detach()[~desirable],
        metrics={"reward_shift": delta},
    )


# KTO's rule for its class weights: lambda_D * n_D / (lambda_U * n_U) within [1, 4/3].
KTO_WEIGHT_RATIO = (1.0, 4 / 3)


def kto_desirable_weight(n_desirable: int, n_undesirable: int, *, undesirable_weight: float = 1.0) -> float:
    """The desirable weight lambda_D that KTO's authors recommend for these example counts.

    Ethayarajh et al. (2024), arXiv:2402.01306: pick lambda_D, lambda_U so that
    lambda_D * n_D / (lambda_U * n_U) lies in [1, 4/3]. With lambda_U given, lambda_D is 1.0 where
    that already holds, else the nearest end of the range:
      lambda_D = clamp(1.0, lo=lambda_U * n_U / n_D, hi=(4/3) * lambda_U * n_U / n_D).
    E.g. n_D = 10, n_U = 30 -> 3.0 (ratio 1); n_D = 90, n_U = 10 -> 4/27 (ratio 4/3).
    No weight balances data without desirable examples, or without weighted undesirable ones:
    ValueError.
    """
    if n_desirable <= 0:
        raise ValueError(
            f"the training data has no desirable examples (n_D {n_desirable}, n_U {n_undesirable}), "
            "so no desirable weight balances it"
        )
    if n_undesirable <= 0 or undesirable_weight <= 0:
        raise ValueError(
            f"the training data has no weighted undesirable examples (n_D {n_desirable}, "
            f"n_U {n_undesirable}, undesirable_weight {undesirable_weight}), so the rule "
            "lambda_D * n_D / (lambda_U * n_U) in [1, 4/3] sets no weight"
        )
    low = undesirable_weight * n_undesirable / n_desirable
    return min(max(1.0, KTO_WEIGHT_RATIO[0] * low), KTO_WEIGHT_RATIO[1] * low)


def rft_loss(
    policy_logps: torch.Tensor,
    ntokens: torch.Tensor,
    desirable: torch.Tensor,
) -> LossOutput:
    """Rejection-sampling fine-tuning (RFT): the per-token NLL of the desirable completions.

    loss = -policy_logps / ntokens for a desirable example, 0 for an undesirable one.

    Supervised fine-tuning on the samples that pass a verifier (Yuan et al. 2023,
    arXiv:2308.01825; with online rounds, ReST / expert iteration). Reference-free, no beta.
    Log-probs: SUMMED over completion tokens, divided here by ``ntokens``. The built-in
    experiment gives it only passing samples; on other unpaired data the undesirable rows add
    zero loss. Rewards: the per-token mean log-prob of the desirable (chosen_rewards) and
    undesirable (rejected_rewards) examples. metrics: nll (B,), the per-token NLL.
    """
    check_shapes(policy_logps, ntokens, desirable)
    if desirable.dtype != torch.bool:
        raise ValueError(f"desirable must be a bool tensor, got dtype {desirable.dtype}")
    nll = -policy_logps / ntokens.to(policy_logps.dtype)
    loss = torch.where(desirable, nll, torch.zeros_like(nll))
    mean_logps = (-nll).detach()
    return LossOutput(
        loss=loss,
        chosen_rewards=mean_logps[desirable],
        rejected_rewards=mean_logps[~desirable],
        metrics={"nll": nll.detach()},
    )
