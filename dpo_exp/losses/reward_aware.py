"""Reward-aware pairwise losses: DPO's implicit reward gap fitted to the gap of the data's rewards.

Where a pair carries each response's reward r* (a rating, a verifier's score), these losses use
how much better the chosen answer is, not only that it is. They are NeMo-Aligner's
`preference_loss` options `rpo_sq`, `rpo_fwd_kl`, `rpo_bwd_kl` and `scale` (Nemotron-4 340B's
"Reward-aware Preference Optimization", Adler et al. 2024, arXiv:2406.11704), renamed here so they
cannot be confused with `loss=rpo` (Pang et al.'s DPO + NLL).

Notation: h = (pi_c - ref_c) - (pi_r - ref_r) from SUMMED log-probs; g = s * (r*_c - r*_r), s the
`reward_scale` (NeMo's `gt_reward_scale`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dpo_exp.losses.base import (
    LossOutput,
    check_beta,
    check_shapes,
    dpo_style_output,
    preference_margin,
    reference_output,
)


def _gaps(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    chosen_scores: torch.Tensor,
    rejected_scores: torch.Tensor,
    beta: float,
    reward_scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(beta * h, g): the policy's implicit reward gap and the data's scaled reward gap."""
    check_beta(beta)
    if not reward_scale > 0:
        raise ValueError(f"reward_scale must be > 0, got {reward_scale}")
    check_shapes(policy_chosen_logps, chosen_scores, rejected_scores)
    margin = preference_margin(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps
    )
    return beta * margin, reward_scale * (chosen_scores - rejected_scores)


def reward_gap_sq_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    chosen_scores: torch.Tensor,
    rejected_scores: torch.Tensor,
    *,
    beta: float,
    reward_scale: float = 1.0,
) -> LossOutput:
    """The squared distance between the implicit and the data's reward gaps.

    loss = (beta * h - g)^2. NeMo-Aligner's `rpo_sq`.
    metrics: reward_gap g (B,).
    """
    logits, gap = _gaps(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
        chosen_scores, rejected_scores, beta, reward_scale,
    )  # fmt: skip
    return reference_output(
        (logits - gap) ** 2,
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta,
        reward_gap=gap,
    )  # fmt: skip


def _bernoulli_kl(log_p: torch.Tensor, log_q: torch.Tensor, log_not_p: torch.Tensor, log_not_q: torch.Tensor):
    """KL((p, 1 - p) || (q, 1 - q)) from the four log-probabilities."""
    return torch.exp(log_p) * (log_p - log_q) + torch.exp(log_not_p) * (log_not_p - log_not_q)


def reward_gap_fwd_kl_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    chosen_scores: torch.Tensor,
    rejected_scores: torch.Tensor,
    *,
    beta: float,
    reward_scale: float = 1.0,
) -> LossOutput:
    """KL from the policy's Bradley-Terry win probability to the data's.

    loss = KL(Bern(sigmoid(beta * h)) || Bern(sigmoid(g))). NeMo-Aligner's `rpo_fwd_kl` (its code
    names the policy's distribution first). metrics: reward_gap g.
    """
    logits, gap = _gaps(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
        chosen_scores, rejected_scores, beta, reward_scale,
    )  # fmt: skip
    loss = _bernoulli_kl(F.logsigmoid(logits), F.logsigmoid(gap), F.logsigmoid(-logits), F.logsigmoid(-gap))
    return reference_output(
        loss,
        policy_chosen_logps,
        policy_rejected_logps,
        ref_chosen_logps,
        ref_rejected_logps,
        beta,
        reward_gap=gap,
    )


def reward_gap_bwd_kl_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    chosen_scores: torch.Tensor,
    rejected_scores: torch.Tensor,
    *,
    beta: float,
    reward_scale: float = 1.0,
) -> LossOutput:
    """KL from the data's Bradley-Terry win probability to the policy's: a cross-entropy with
    soft labels sigmoid(g), less their entropy.

    loss = KL(Bern(sigmoid(g)) || Bern(sigmoid(beta * h))). NeMo-Aligner's `rpo_bwd_kl`.
    metrics: grad_weight = -d loss / d(beta * h) = sigmoid(g) - sigmoid(beta * h), reward_gap g.
    """
    logits, gap = _gaps(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
        chosen_scores, rejected_scores, beta, reward_scale,
    )  # fmt: skip
    loss = _bernoulli_kl(F.logsigmoid(gap), F.logsigmoid(logits), F.logsigmoid(-gap), F.logsigmoid(-logits))
    return dpo_style_output(
        loss,
        torch.sigmoid(gap) - torch.sigmoid(logits),
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta,
        reward_gap=gap.detach(),
    )  # fmt: skip


def reward_scaled_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    chosen_scores: torch.Tensor,
    rejected_scores: torch.Tensor,
    *,
    beta: float,
) -> LossOutput:
    """DPO with each pair weighted by how far apart its rewards are.

    loss = |r*_c - r*_r| * -logsigmoid(beta * h). NeMo-Aligner's `scale`, per pair: its code
    multiplies the batch's mean DPO loss by each pair's gap, which differs where gaps and losses
    correlate within a batch.
    metrics: grad_weight = |r*_c - r*_r| * sigmoid(-beta * h).
    """
    logits, gap = _gaps(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
        chosen_scores, rejected_scores, beta, 1.0,
    )  # fmt: skip
    return dpo_style_output(
        gap.abs() * -F.logsigmoid(logits),
        gap.abs() * torch.sigmoid(-logits),
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta,
    )  # fmt: skip
