"""Pairwise losses without a reference model: SFT on the chosen answers, CPO, SLiC, AlphaPO.

(ORPO and SimPO, also reference-free, live in `paired.py`.) Each takes the policy's SUMMED
log-probs and token counts; the NLL terms follow their source's reduction, stated per loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dpo_exp.losses.base import LossOutput, check_beta, check_label_smoothing, check_shapes, per_token_mean


def batch_token_nll(policy_chosen_logps: torch.Tensor, chosen_ntokens: torch.Tensor) -> torch.Tensor:
    """The chosen answers' NLL averaged over all their tokens in the batch, repeated per pair (B,).

    -sum_i logps_i / sum_i ntokens_i: a token-level mean, as cross-entropy over a batch (and TRL's
    `sft` term) computes it, so long answers weigh more than in a mean of per-answer means."""
    nll = -policy_chosen_logps.sum() / chosen_ntokens.to(policy_chosen_logps.dtype).sum()
    return nll.expand(policy_chosen_logps.shape[0])


def _mean_rewards(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    chosen_ntokens: torch.Tensor,
    rejected_ntokens: torch.Tensor,
    scale: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    return (
        (scale * per_token_mean(policy_chosen_logps, chosen_ntokens)).detach(),
        (scale * per_token_mean(policy_rejected_logps, rejected_ntokens)).detach(),
    )


def sft_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    chosen_ntokens: torch.Tensor,
    rejected_ntokens: torch.Tensor,
) -> LossOutput:
    """Supervised fine-tuning on the chosen answers of pairs: their token-level mean NLL.

    loss_i = -sum_j pi_c,j / sum_j n_c,j for every pair i of the batch (`batch_token_nll`).
    TRL's `sft` loss type, used mostly as a term of a mix (MPO: sigmoid + bco_pair + sft). The
    rejected answers are scored only for the yardsticks. No reference, no beta.
    Rewards: per-token mean log-probs, so accuracy says whether chosen is likelier per token.
    metrics: nll (B,), the chosen answer's own per-token NLL.
    """
    check_shapes(policy_chosen_logps, policy_rejected_logps, chosen_ntokens, rejected_ntokens)
    chosen_rewards, rejected_rewards = _mean_rewards(
        policy_chosen_logps, policy_rejected_logps, chosen_ntokens, rejected_ntokens
    )
    return LossOutput(
        loss=batch_token_nll(policy_chosen_logps, chosen_ntokens),
        chosen_rewards=chosen_rewards,
        rejected_rewards=rejected_rewards,
        metrics={"nll": -chosen_rewards},
    )


def cpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    chosen_ntokens: torch.Tensor,
    *,
    beta: float,
    nll_weight: float = 1.0,
    label_smoothing: float = 0.0,
) -> LossOutput:
    """Contrastive Preference Optimization: DPO with a uniform reference, plus the chosen NLL.

    loss = -(1 - eps) * logsigmoid(beta * d) - eps * logsigmoid(-beta * d) + w * NLL,
    d = pi_c - pi_r (SUMMED log-probs), NLL the batch's token-level mean NLL of the chosen answers
    (`batch_token_nll`), w = `nll_weight`.

    Xu, Sharaf, Chen, Tan, Shen, Van Durme, Murray, Kim (2024), "Contrastive Preference
    Optimization", arXiv:2401.08417; TRL's `CPOTrainer` (`loss_type="sigmoid"`, `cpo_alpha` = w).
    Rewards: beta * pi (summed). metrics: grad_weight = -d loss / d(beta * d), nll.
    """
    check_beta(beta)
    check_shapes(policy_chosen_logps, policy_rejected_logps, chosen_ntokens)
    check_label_smoothing(label_smoothing)
    if nll_weight < 0:
        raise ValueError(f"nll_weight must be >= 0, got {nll_weight}")
    logits = beta * (policy_chosen_logps - policy_rejected_logps)
    eps = label_smoothing
    nll = batch_token_nll(policy_chosen_logps, chosen_ntokens)
    loss = -(1 - eps) * F.logsigmoid(logits) - eps * F.logsigmoid(-logits) + nll_weight * nll
    return LossOutput(
        loss=loss,
        chosen_rewards=(beta * policy_chosen_logps).detach(),
        rejected_rewards=(beta * policy_rejected_logps).detach(),
        metrics={
            "grad_weight": ((1 - eps) * torch.sigmoid(-logits) - eps * torch.sigmoid(logits)).detach(),
            "nll": nll.detach(),
        },
    )


def slic_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    chosen_ntokens: torch.Tensor,
    *,
    margin: float = 1.0,
    nll_weight: float = 0.1,
) -> LossOutput:
    """Sequence Likelihood Calibration (SLiC-HF): a hinge on the likelihood gap, plus the chosen NLL.

    loss = max(0, delta - (pi_c - pi_r)) + lambda * nll_c, pi SUMMED log-probs, nll_c the chosen
    answer's per-token mean NLL, delta = `margin`, lambda = `nll_weight`.

    Zhao, Joshi, Liu, Khalman, Saleh, Liu (2023), "SLiC-HF: Sequence Likelihood Calibration with
    Human Feedback", arXiv:2305.10425, Eq. (1), with the SFT targets taken to be the chosen
    answers. No reference, no beta (`loss=hinge` is the reference-based hinge). The paper tunes
    delta and lambda; the defaults here are a starting point, not its values.
    Rewards: summed log-probs. metrics: grad_weight = 1 where the hinge is active, else 0; nll.
    """
    check_shapes(policy_chosen_logps, policy_rejected_logps, chosen_ntokens)
    if margin <= 0 or nll_weight < 0:
        raise ValueError(f"margin must be > 0 and nll_weight >= 0, got {margin} and {nll_weight}")
    gap = policy_chosen_logps - policy_rejected_logps
    nll = -per_token_mean(policy_chosen_logps, chosen_ntokens)
    return LossOutput(
        loss=torch.relu(margin - gap) + nll_weight * nll,
        chosen_rewards=policy_chosen_logps.detach(),
        rejected_rewards=policy_rejected_logps.detach(),
        metrics={"grad_weight": (gap < margin).to(gap.dtype).detach(), "nll": nll.detach()},
    )


def alpha_reward(mean_logps: torch.Tensor, alpha: float) -> torch.Tensor:
    """AlphaPO's reward (1 - p^(-alpha)) / alpha of a per-token mean log-prob m (p = exp(m));
    alpha -> 0 gives m itself (SimPO's reward)."""
    if alpha == 0.0:
        return mean_logps
    return (1 - torch.exp(-alpha * mean_logps)) / alpha


def alphapo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    chosen_ntokens: torch.Tensor,
    rejected_ntokens: torch.Tensor,
    *,
    beta: float,
    alpha: float = 0.25,
    gamma: float = 0.5,
) -> LossOutput:
    """AlphaPO: SimPO with its reward reshaped by alpha.

    loss = -logsigmoid(beta * (r_c - r_r) - gamma), r = (1 - exp(-alpha * m)) / alpha,
    m = logps / ntokens (per-token mean). alpha = 0 is SimPO (`loss=simpo`).

    Gupta et al. (2025), "AlphaPO: Reward Shape Matters for LLM Alignment",
    arXiv:2501.03884; TRL's `CPOTrainer` with `loss_type="alphapo"` (its `simpo_gamma` / beta
    offset is gamma / beta here, the same loss). Log-probs: pass SUMMED; means taken here.
    Rewards: beta * r. metrics: grad_weight = sigmoid(-(beta * (r_c - r_r) - gamma)).
    """
    check_beta(beta)
    check_shapes(policy_chosen_logps, policy_rejected_logps, chosen_ntokens, rejected_ntokens)
    chosen = alpha_reward(per_token_mean(policy_chosen_logps, chosen_ntokens), alpha)
    rejected = alpha_reward(per_token_mean(policy_rejected_logps, rejected_ntokens), alpha)
    logits = beta * (chosen - rejected) - gamma
    return LossOutput(
        loss=-F.logsigmoid(logits),
        chosen_rewards=(beta * chosen).detach(),
        rejected_rewards=(beta * rejected).detach(),
        metrics={"grad_weight": torch.sigmoid(-logits).detach()},
    )
