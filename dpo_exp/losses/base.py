"""Shared parts of the losses: their output type and the tensor helpers they are built from.

Every log-prob argument is a ``(B,)`` tensor holding the SUM of token log-probs over the
completion (what ``logprobs.py`` returns). Losses that length-normalise also take the token
counts (``chosen_ntokens``, ``rejected_ntokens``, each ``(B,)`` and >= 1) and divide themselves,
so the caller never has to know which loss wants means. Each function returns a per-example
loss ``(B,)`` to minimise; the caller reduces it. Rewards and metrics are detached.

This package imports only torch and the standard library: no config, logging or collectives.
KTO's reference point ``kl_baseline`` is an input that the caller computes and all-reduces.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# ORPO's log-odds log(p / (1 - p)) is infinite at p = 1, i.e. at mean log-prob m = 0.
# Clamping m to at most this keeps log(1 - exp(m)) >= log(1e-6) ~ -13.8.
MAX_MEAN_LOGPS = -1e-6


@dataclass(frozen=True)
class LossOutput:
    """What every loss returns.

    loss: (B,) per-example loss to minimise; the caller reduces (mean).
    chosen_rewards: (B,) detached implicit rewards of the chosen responses
        (KTO: of the desirable examples, shape (n_desirable,), possibly empty).
    rejected_rewards: (B,) detached implicit rewards of the rejected responses
        (KTO: of the undesirable examples, shape (n_undesirable,), possibly empty).
    metrics: loss-specific terms, each detached; (B,) per example, or a scalar for
        batch-level terms such as KTO's ``kl``.
    """

    loss: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor
    metrics: dict[str, torch.Tensor]


# --------------------------------------------------------------------------- helpers

# The f-divergences of f-DPO (Wang et al. 2023, "Beyond Reverse KL", arXiv:2309.16240), by TRL's names.
DIVERGENCES = ("reverse_kl", "forward_kl", "js_divergence", "alpha_divergence")
DEFAULT_DIVERGENCE_ALPHA = 0.5


def check_beta(beta: float) -> None:
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")


def check_label_smoothing(label_smoothing: float) -> None:
    """A label-flip rate eps in [0, 0.5): at 0.5 the labels carry no preference."""
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")


def check_shapes(*tensors: torch.Tensor) -> None:
    """All per-sequence inputs must be 1-D and the same length: (B,) vs (B, 1) would
    broadcast silently to (B, B)."""
    shape = tensors[0].shape
    if len(shape) != 1 or any(t.shape != shape for t in tensors):
        shapes = ", ".join(str(tuple(t.shape)) for t in tensors)
        raise ValueError(f"loss inputs must all have the same shape (B,); got {shapes}")


def preference_margin(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
) -> torch.Tensor:
    """h = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected), shape (B,)."""
    check_shapes(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    return (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)


def ref_rewards(policy_logps: torch.Tensor, ref_logps: torch.Tensor, beta: float) -> torch.Tensor:
    """Implicit reward beta * (policy - ref), detached, shape (B,)."""
    return (beta * (policy_logps - ref_logps)).detach()


def per_token_mean(logps: torch.Tensor, ntokens: torch.Tensor) -> torch.Tensor:
    """Per-token mean log-prob m = summed logps / ntokens (ntokens may be an int tensor)."""
    return logps / ntokens.to(logps.dtype)


def log_odds(mean_logps: torch.Tensor) -> torch.Tensor:
    """log(p / (1 - p)) with p = exp(m): m - log(1 - exp(m)), computed as m - log(-expm1(m)).

    m is clamped to <= -1e-6 so that m -> 0 (p -> 1) stays finite; for very negative m
    expm1(m) -> -1 and the result tends to m, also finite.
    """
    m = mean_logps.clamp(max=MAX_MEAN_LOGPS)
    return m - torch.log(-torch.expm1(m))


def dpo_style_output(
    loss: torch.Tensor,
    grad_weight: torch.Tensor,
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float,
    **metrics: torch.Tensor,
) -> LossOutput:
    """Output for the reference-based pairwise losses: rewards beta * (policy - ref), and the
    loss's own per-pair gradient scale `grad_weight` = -d loss / d(beta * h), as each loss derives it."""
    return reference_output(
        loss,
        policy_chosen_logps,
        policy_rejected_logps,
        ref_chosen_logps,
        ref_rejected_logps,
        beta,
        grad_weight=grad_weight,
        **metrics,
    )


def divergence_scores(
    logratios: torch.Tensor, divergence: str = "reverse_kl", alpha: float = DEFAULT_DIVERGENCE_ALPHA
) -> torch.Tensor:
    """f'(t) at t = pi / ref for the f-divergence that regularises the policy, from log t (B,).

    f-DPO replaces DPO's log-ratio (reverse KL, f'(t) = log t + 1) by f'(t): forward KL 1 - 1/t,
    Jensen-Shannon log(2t / (t + 1)), alpha-divergence (t^(alpha - 1) - 1) / (alpha - 1). The
    constant terms cancel in the chosen - rejected difference. As TRL, the alpha-divergence's
    exponent is clamped at 80 (fp32's exp stays finite) and alpha = 1 is reverse KL, its limit.
    """
    if divergence not in DIVERGENCES:
        raise ValueError(f"divergence must be one of {', '.join(DIVERGENCES)}, got {divergence!r}")
    if divergence != "alpha_divergence" and alpha != DEFAULT_DIVERGENCE_ALPHA:
        raise ValueError(f"divergence_alpha acts only with divergence=alpha_divergence, not {divergence}")
    if divergence == "forward_kl":
        return 1 - torch.exp(-logratios)
    if divergence == "js_divergence":
        return math.log(2) + F.logsigmoid(logratios)
    if divergence == "alpha_divergence" and abs(alpha - 1.0) >= 1e-6:
        exponent = ((alpha - 1.0) * logratios).clamp(max=80.0)
        return (torch.exp(exponent) - 1.0) / (alpha - 1.0)
    return logratios


def divergence_margin(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    divergence: str,
    alpha: float,
) -> torch.Tensor:
    """The preference margin with each log-ratio read through the f-divergence: (B,).

    reverse_kl gives `preference_margin` itself."""
    check_shapes(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    chosen = divergence_scores(policy_chosen_logps - ref_chosen_logps, divergence, alpha)
    rejected = divergence_scores(policy_rejected_logps - ref_rejected_logps, divergence, alpha)
    return chosen - rejected


def reference_output(
    loss: torch.Tensor,
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float,
    **metrics: torch.Tensor,
) -> LossOutput:
    """Output for a reference-based pairwise loss with no single margin to weigh: rewards
    beta * (policy - ref), metrics as given (detached here)."""
    return LossOutput(
        loss=loss,
        chosen_rewards=ref_rewards(policy_chosen_logps, ref_chosen_logps, beta),
        rejected_rewards=ref_rewards(policy_rejected_logps, ref_rejected_logps, beta),
        metrics={name: value.detach() for name, value in metrics.items()},
    )
