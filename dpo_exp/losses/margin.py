"""Reference-based pairwise losses that reshape DPO's margin: length-normalised, EXO, DiscoPOP, AOT.

Each is a function of the pair's margin h = (pi_c - ref_c) - (pi_r - ref_r) (or, for AOT, of the
batch's sorted log-ratios), by the names TRL 1.16's `DPOTrainer` gives them (`loss_type`).
"""

from __future__ import annotations

import math

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
    per_token_mean,
    reference_output,
)


def sigmoid_norm_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    chosen_ntokens: torch.Tensor,
    rejected_ntokens: torch.Tensor,
    *,
    beta: float,
    divergence: str = "reverse_kl",
    divergence_alpha: float = DEFAULT_DIVERGENCE_ALPHA,
) -> LossOutput:
    """DPO on per-token-mean log-ratios (length-normalised DPO).

    loss = -logsigmoid(beta * h'), h' = (pi_c - ref_c) / n_c - (pi_r - ref_r) / n_r.

    TRL's `sigmoid_norm`; open-instruct's `dpo_norm` (its default loss). beta lives on a per-token
    scale: a margin of 1 nat per token is n nats summed, so recipes use beta near 5-10, not 0.1.
    Log-probs: pass SUMMED log-probs; this function divides by the token counts.
    Rewards: beta * per-token-mean log-ratios (TRL logs beta * the sums).
    metrics: grad_weight = sigmoid(-beta * h') = -d loss / d(beta * h').
    """
    check_beta(beta)
    check_shapes(
        policy_chosen_logps,
        policy_rejected_logps,
        ref_chosen_logps,
        ref_rejected_logps,
        chosen_ntokens,
        rejected_ntokens,
    )
    chosen_logratios = policy_chosen_logps - ref_chosen_logps
    rejected_logratios = policy_rejected_logps - ref_rejected_logps
    chosen_scores = divergence_scores(chosen_logratios, divergence, divergence_alpha)
    rejected_scores = divergence_scores(rejected_logratios, divergence, divergence_alpha)
    logits = beta * (
        per_token_mean(chosen_scores, chosen_ntokens) - per_token_mean(rejected_scores, rejected_ntokens)
    )
    return LossOutput(
        loss=-F.logsigmoid(logits),
        chosen_rewards=(beta * per_token_mean(chosen_logratios, chosen_ntokens)).detach(),
        rejected_rewards=(beta * per_token_mean(rejected_logratios, rejected_ntokens)).detach(),
        metrics={"grad_weight": torch.sigmoid(-logits).detach()},
    )


def exo_pair_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    *,
    beta: float,
    label_smoothing: float = 1e-3,
    divergence: str = "reverse_kl",
    divergence_alpha: float = DEFAULT_DIVERGENCE_ALPHA,
) -> LossOutput:
    """EXO for pairs: the reverse KL from the policy's pair distribution to the labels'.

    With q = sigmoid(beta * h) (the policy's probability that chosen wins among the two) and the
    label distribution (1 - eps, eps):
      loss = KL(q || (1 - eps, eps)) = q * (log q - log(1 - eps)) + (1 - q) * (log(1 - q) - log eps).
    Minimised at q = 1 - eps, so eps > 0 is required (at eps = 0 the target is a point mass).

    Ji, Zhou, Qiu, Ji, Zheng, Zhu, Ma, Huang (2024), "Towards Efficient Exact Optimization of
    Language Model Alignment", arXiv:2402.00856, Eq. (16); TRL's `exo_pair`, eps = 1e-3 as the
    paper recommends. Log-probs: SUMMED. `divergence`: as `dpo_loss`.
    metrics: grad_weight = -d loss / d(beta * h) = q (1 - q) (log((1 - eps) / eps) - beta * h).
    """
    check_beta(beta)
    if not 0.0 < label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in (0, 0.5) for exo_pair, got {label_smoothing}")
    logits = beta * divergence_margin(
        policy_chosen_logps,
        policy_rejected_logps,
        ref_chosen_logps,
        ref_rejected_logps,
        divergence,
        divergence_alpha,
    )
    eps = label_smoothing
    win, loss_ = torch.sigmoid(logits), torch.sigmoid(-logits)
    loss = win * (F.logsigmoid(logits) - math.log1p(-eps)) + loss_ * (F.logsigmoid(-logits) - math.log(eps))
    return dpo_style_output(
        loss,
        win * loss_ * (math.log((1 - eps) / eps) - logits),
        policy_chosen_logps,
        policy_rejected_logps,
        ref_chosen_logps,
        ref_rejected_logps,
        beta,
    )


def _discopop(logits: torch.Tensor, tau: float) -> torch.Tensor:
    modulation = torch.sigmoid(logits / tau)
    return -F.logsigmoid(logits) * (1 - modulation) + torch.exp(-logits) * modulation


def _discopop_grad_weight(logits: torch.Tensor, tau: float) -> torch.Tensor:
    """-d loss / dz: each component's slope, plus the slope of the blend between them."""
    modulation = torch.sigmoid(logits / tau)
    exponential = torch.exp(-logits)
    return (
        torch.sigmoid(-logits) * (1 - modulation)
        + exponential * modulation
        + modulation * (1 - modulation) / tau * (-F.logsigmoid(logits) - exponential)
    )


def discopop_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    *,
    beta: float,
    tau: float = 0.05,
    divergence: str = "reverse_kl",
    divergence_alpha: float = DEFAULT_DIVERGENCE_ALPHA,
) -> LossOutput:
    """DiscoPOP (log-ratio modulated loss): a blend of the logistic and the exponential loss.

    With z = beta * h and m = sigmoid(z / tau):
      loss = -logsigmoid(z) * (1 - m) + exp(-z) * m.

    Chan Lu, Holt, Fanconi, Chan, Foerster, van der Schaar, Lange (2024), "Discovering Preference
    Optimization Algorithms with and for Large Language Models", arXiv:2406.08414, Eq. (5); TRL's
    `discopop`, tau = 0.05 as the paper recommends. Log-probs: SUMMED. `divergence`: as `dpo_loss`.
    The loss is not convex: at z = 0 (a policy equal to its reference) its slope points the wrong
    way, grad_weight = 3/4 - (1 - ln 2) / (4 tau) = -0.78 at tau = 0.05, so the first steps from
    the reference push margins down until they leave the blend's narrow band around 0.
    metrics: grad_weight = -d loss / d z.
    """
    check_beta(beta)
    if not tau > 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    logits = beta * divergence_margin(
        policy_chosen_logps,
        policy_rejected_logps,
        ref_chosen_logps,
        ref_rejected_logps,
        divergence,
        divergence_alpha,
    )
    return dpo_style_output(
        _discopop(logits, tau),
        _discopop_grad_weight(logits, tau),
        policy_chosen_logps,
        policy_rejected_logps,
        ref_chosen_logps,
        ref_rejected_logps,
        beta,
    )


def _smoothed_logistic(delta: torch.Tensor, beta: float, label_smoothing: float) -> torch.Tensor:
    return -F.logsigmoid(beta * delta) * (1 - label_smoothing) - F.logsigmoid(-beta * delta) * label_smoothing


def aot_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    *,
    beta: float,
    label_smoothing: float = 0.0,
) -> LossOutput:
    """Alignment via Optimal Transport, paired: DPO's logistic loss on sorted log-ratio margins.

    With d = pi_c - pi_r and d_ref = ref_c - ref_r over the batch, each sorted ascending:
      loss_i = -(1 - eps) * logsigmoid(beta * (sort(d)_i - sort(d_ref)_i))
               - eps * logsigmoid(-beta * (sort(d)_i - sort(d_ref)_i)).
    Loss i belongs to the i-th smallest margins, not to pair i: a batch-level loss (its mean is
    what trains). Sorting is within the batch of one process, as TRL's.

    Melnyk, Mroueh, Belgodere, Rigotti, Nitsure, Yurochkin, Greenewald, Navratil, Ross (2024),
    "Distributional Preference Alignment of LLMs via Optimal Transport", arXiv:2406.05882; TRL's `aot`.
    Log-probs: SUMMED. Rewards: beta * (policy - ref) per pair.
    """
    check_beta(beta)
    check_label_smoothing(label_smoothing)
    check_shapes(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    margins, _ = torch.sort(policy_chosen_logps - policy_rejected_logps, dim=0)
    ref_margins, _ = torch.sort(ref_chosen_logps - ref_rejected_logps, dim=0)
    return reference_output(
        _smoothed_logistic(margins - ref_margins, beta, label_smoothing),
        policy_chosen_logps,
        policy_rejected_logps,
        ref_chosen_logps,
        ref_rejected_logps,
        beta,
    )


def aot_unpaired_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    *,
    beta: float,
    label_smoothing: float = 0.0,
) -> LossOutput:
    """Alignment via Optimal Transport, unpaired: chosen and rejected log-ratios sorted apart.

      loss_i = logistic(beta * (sort(pi_c - ref_c)_i - sort(pi_r - ref_r)_i)), smoothed as `aot_loss`.
    The chosen and rejected answers of a pair need not be compared with each other: the i-th
    smallest chosen log-ratio is compared with the i-th smallest rejected one (a batch-level loss).

    Melnyk et al. (2024), arXiv:2406.05882; TRL's `aot_unpaired`. Log-probs: SUMMED.
    """
    check_beta(beta)
    check_label_smoothing(label_smoothing)
    check_shapes(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    chosen, _ = torch.sort(policy_chosen_logps - ref_chosen_logps, dim=0)
    rejected, _ = torch.sort(policy_rejected_logps - ref_rejected_logps, dim=0)
    return reference_output(
        _smoothed_logistic(chosen - rejected, beta, label_smoothing),
        policy_chosen_logps,
        policy_rejected_logps,
        ref_chosen_logps,
        ref_rejected_logps,
        beta,
    )
