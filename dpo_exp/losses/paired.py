"""Pairwise preference losses: DPO and its variants, on (chosen, rejected) log-probs."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dpo_exp.losses.base import (
    DEFAULT_DIVERGENCE_ALPHA,
    LossOutput,
    check_beta,
    check_label_smoothing,
    check_shapes,
    divergence_margin,
    divergence_scores,
    dpo_style_output,
    log_odds,
    per_token_mean,
    preference_margin,
)


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    *,
    beta: float,
    label_smoothing: float = 0.0,
    divergence: str = "reverse_kl",
    divergence_alpha: float = DEFAULT_DIVERGENCE_ALPHA,
) -> LossOutput:
    """Direct Preference Optimization, with optional conservative label smoothing.

    loss = -(1 - eps) * logsigmoid(beta * h) - eps * logsigmoid(-beta * h)
    with h = (pi_c - ref_c) - (pi_r - ref_r).

    Rafailov, Sharma, Mitchell, Ermon, Manning, Finn (2023), arXiv:2305.18290.
    eps > 0 is conservative DPO (Mitchell 2023, "A note on DPO with noisy preferences"):
    eps is the assumed probability that a preference label is flipped, 0 <= eps < 0.5.
    Log-probs: SUMMED over completion tokens. TRL's `sigmoid`.
    `divergence` other than reverse_kl is f-DPO (Wang et al. 2023): each log-ratio in h is read
    through f'(t) (`base.divergence_scores`), `divergence_alpha` the alpha-divergence's alpha.
    metrics: grad_weight = -d loss / d(beta * h) = sigmoid(-beta * h) - eps (the pair's pull;
    negative when a smoothed pair is pushed back).
    """
    check_beta(beta)
    check_label_smoothing(label_smoothing)
    logits = beta * divergence_margin(
        policy_chosen_logps,
        policy_rejected_logps,
        ref_chosen_logps,
        ref_rejected_logps,
        divergence,
        divergence_alpha,
    )
    loss = -(1 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)
    return dpo_style_output(
        loss,
        torch.sigmoid(-logits) - label_smoothing,
        policy_chosen_logps,
        policy_rejected_logps,
        ref_chosen_logps,
        ref_rejected_logps,
        beta,
    )


def _ipo_side(
    logratios: torch.Tensor, ntokens: torch.Tensor, length_normalize: bool, divergence: str, alpha: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-ratios, their f-divergence scores), per-token means when `length_normalize`."""
    scores = divergence_scores(logratios, divergence, alpha)
    if not length_normalize:
        return logratios, scores
    return per_token_mean(logratios, ntokens), per_token_mean(scores, ntokens)


def ipo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    chosen_ntokens: torch.Tensor,
    rejected_ntokens: torch.Tensor,
    *,
    beta: float,
    length_normalize: bool = True,
    divergence: str = "reverse_kl",
    divergence_alpha: float = DEFAULT_DIVERGENCE_ALPHA,
) -> LossOutput:
    """Identity Preference Optimisation (IPO).

    loss = (h' - 1 / (2 * beta))^2, where beta is the paper's tau and
      h' = (pi_c - ref_c) / chosen_ntokens - (pi_r - ref_r) / rejected_ntokens
           if length_normalize (per-token-mean log-probs, as TRL does), else
      h' = h = (pi_c - ref_c) - (pi_r - ref_r) (summed log-probs, as the original DPO repo).

    Azar, Rowland, Piot, Guo, Calandriello, Valko, Munos (2023), arXiv:2310.12036.
    Log-probs: pass SUMMED; divided here when length_normalize. `divergence`: as `dpo_loss`.
    Rewards: beta * (policy - ref), per-token mean when length_normalize (TRL logs the sums).
    metrics: grad_weight = |d loss / d h'| = 2 * |h' - 1 / (2 * beta)| (unbounded, unlike the
    DPO family's weights in [0, 1]: the pull on a pair grows with its distance from the target).
    """
    check_beta(beta)
    check_shapes(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    check_shapes(policy_chosen_logps, chosen_ntokens, rejected_ntokens)
    chosen_logratios, chosen_scores = _ipo_side(
        policy_chosen_logps - ref_chosen_logps, chosen_ntokens, length_normalize, divergence, divergence_alpha
    )
    rejected_logratios, rejected_scores = _ipo_side(
        policy_rejected_logps - ref_rejected_logps,
        rejected_ntokens,
        length_normalize,
        divergence,
        divergence_alpha,
    )
    h = chosen_scores - rejected_scores
    loss = (h - 1 / (2 * beta)) ** 2
    return LossOutput(
        loss=loss,
        chosen_rewards=(beta * chosen_logratios).detach(),
        rejected_rewards=(beta * rejected_logratios).detach(),
        metrics={"grad_weight": (2 * (h - 1 / (2 * beta)).abs()).detach()},
    )


def orpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    chosen_ntokens: torch.Tensor,
    rejected_ntokens: torch.Tensor,
    chosen_nll: torch.Tensor,
    *,
    beta: float,
) -> LossOutput:
    """Odds Ratio Preference Optimization (ORPO), reference-free.

    With per-token mean log-probs m = logps / ntokens and log-odds(m) = m - log(1 - exp(m)):
      log_odds_ratio = log-odds(m_c) - log-odds(m_r)
      loss = chosen_nll - beta * logsigmoid(log_odds_ratio)
    where beta is the paper's lambda and chosen_nll (B,) is the per-token-mean NLL of the
    chosen response (usually -m_c), passed in by the caller.

    Hong, Lee, Thorne (2024), arXiv:2403.07691.
    Log-probs: pass SUMMED log-probs; the function takes per-token means itself.
    m is clamped to <= -1e-6 so the log-odds stay finite as p -> 1.
    Rewards: beta * m. metrics: nll, log_odds_ratio, or_loss = -logsigmoid(log_odds_ratio).
    """
    check_beta(beta)
    check_shapes(policy_chosen_logps, policy_rejected_logps, chosen_ntokens, rejected_ntokens, chosen_nll)
    chosen_mean = per_token_mean(policy_chosen_logps, chosen_ntokens)
    rejected_mean = per_token_mean(policy_rejected_logps, rejected_ntokens)
    log_odds_ratio = log_odds(chosen_mean) - log_odds(rejected_mean)
    or_loss = -F.logsigmoid(log_odds_ratio)
    return LossOutput(
        loss=chosen_nll + beta * or_loss,
        chosen_rewards=(beta * chosen_mean).detach(),
        rejected_rewards=(beta * rejected_mean).detach(),
        metrics={
            "nll": chosen_nll.detach(),
            "log_odds_ratio": log_odds_ratio.detach(),
            "or_loss": or_loss.detach(),
        },
    )


def hinge_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    *,
    beta: float,
    divergence: str = "reverse_kl",
    divergence_alpha: float = DEFAULT_DIVERGENCE_ALPHA,
) -> LossOutput:
    """Hinge (SLiC-style calibration) loss on the reference-adjusted margin.

    loss = relu(1 - beta * h), h = (pi_c - ref_c) - (pi_r - ref_r).

    Zhao, Joshi, Liu, Khalman, Saleh, Liu (2023), SLiC-HF, arXiv:2305.10425.
    Log-probs: SUMMED over completion tokens. `divergence`: as `dpo_loss`.
    metrics: grad_weight = 1 where beta * h < 1 (the pair still gets a gradient), else 0.
    """
    check_beta(beta)
    logits = beta * divergence_margin(
        policy_chosen_logps,
        policy_rejected_logps,
        ref_chosen_logps,
        ref_rejected_logps,
        divergence,
        divergence_alpha,
    )
    return dpo_style_output(
        torch.relu(1 - logits),
        (logits < 1).to(logits.dtype),
        policy_chosen_logps,
        policy_rejected_logps,
        ref_chosen_logps,
        ref_rejected_logps,
        beta,
    )


def robust_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    *,
    beta: float,
    label_smoothing: float = 0.1,
    divergence: str = "reverse_kl",
    divergence_alpha: float = DEFAULT_DIVERGENCE_ALPHA,
) -> LossOutput:
    """Robust DPO: an unbiased estimate of the DPO loss under label-flip noise rate eps.

    loss = (-(1 - eps) * logsigmoid(beta * h) + eps * logsigmoid(-beta * h)) / (1 - 2 * eps),
    h = (pi_c - ref_c) - (pi_r - ref_r), 0 <= eps < 0.5.

    Chowdhury, Kini, Natarajan (2024), "Provably Robust DPO", arXiv:2403.00409.
    Log-probs: SUMMED over completion tokens. `divergence`: as `dpo_loss`.
    metrics: grad_weight = -d loss / d(beta * h)
    = ((1 - eps) * sigmoid(-beta * h) + eps * sigmoid(beta * h)) / (1 - 2 * eps).
    """
    check_beta(beta)
    check_label_smoothing(label_smoothing)
    logits = beta * divergence_margin(
        policy_chosen_logps,
        policy_rejected_logps,
        ref_chosen_logps,
        ref_rejected_logps,
        divergence,
        divergence_alpha,
    )
    eps = label_smoothing
    loss = (-(1 - eps) * F.logsigmoid(logits) + eps * F.logsigmoid(-logits)) / (1 - 2 * eps)
    return dpo_style_output(
        loss,
        ((1 - eps) * torch.sigmoid(-logits) + eps * torch.sigmoid(logits)) / (1 - 2 * eps),
        policy_chosen_logps,
        policy_rejected_logps,
        ref_chosen_logps,
        ref_rejected_logps,
        beta,
    )


def simpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    chosen_ntokens: torch.Tensor,
    rejected_ntokens: torch.Tensor,
    *,
    beta: float,
    gamma: float = 0.5,
) -> LossOutput:
    """Simple Preference Optimization (SimPO), reference-free and length-averaged.

    loss = -logsigmoid(beta * (m_c - m_r) - gamma), with m = logps / ntokens.
    (Here gamma is the margin itself, not gamma / beta as in some implementations.)

    Meng, Xia, Chen (2024), arXiv:2405.14734.
    Log-probs: pass SUMMED log-probs; the function takes per-token means itself.
    Rewards: beta * m. metrics: grad_weight = sigmoid(-(beta * (m_c - m_r) - gamma)).
    """
    check_beta(beta)
    check_shapes(policy_chosen_logps, policy_rejected_logps, chosen_ntokens, rejected_ntokens)
    chosen_mean = per_token_mean(policy_chosen_logps, chosen_ntokens)
    rejected_mean = per_token_mean(policy_rejected_logps, rejected_ntokens)
    logits = beta * (chosen_mean - rejected_mean) - gamma
    return LossOutput(
        loss=-F.logsigmoid(logits),
        chosen_rewards=(beta * chosen_mean).detach(),
        rejected_rewards=(beta * rejected_mean).detach(),
        metrics={"grad_weight": torch.sigmoid(-logits).detach()},
    )


def rpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    chosen_ntokens: torch.Tensor,
    *,
    beta: float,
    alpha: float = 1.0,
) -> LossOutput:
    """DPO plus a per-token NLL term on the chosen response (iterative RPO).

    loss = -logsigmoid(beta * h) + alpha * nll, nll = -policy_chosen_logps / chosen_ntokens,
    h = (pi_c - ref_c) - (pi_r - ref_r).

    Pang, Yuan, Cho, He, Sukhbaatar, Weston (2024), "Iterative Reasoning Preference
    Optimization", arXiv:2404.19733.
    Log-probs: SUMMED; the DPO term uses sums, the NLL term divides by chosen_ntokens itself.
    metrics: grad_weight = -d(DPO term) / d(beta * h) = sigmoid(-beta * h), nll.
    """
    check_beta(beta)
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    check_shapes(policy_chosen_logps, chosen_ntokens)
    logits = beta * preference_margin(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps
    )
    nll = -per_token_mean(policy_chosen_logps, chosen_ntokens)
    return dpo_style_output(
        -F.logsigmoid(logits) + alpha * nll,
        torch.sigmoid(-logits),  # of the DPO term; the NLL term pulls the chosen answer on its own
        policy_chosen_logps,
        policy_rejected_logps,
        ref_chosen_logps,
        ref_rejected_logps,
        beta,
        nll=nll.detach(),
    )
