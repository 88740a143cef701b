"""Losses on unpaired examples (a completion and whether it is desirable): KTO, and RFT's NLL."""

from __future__ import annotations

import torch

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
