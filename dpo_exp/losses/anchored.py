"""Reference-based pairwise losses on each answer's own log-ratio: NCA, BCO, SPPO, APO.

Unlike DPO, whose loss sees only the difference of the two log-ratios, these anchor each answer's
log-ratio r = pi - ref on its own (to zero, or to a target), so they can move the chosen answer's
likelihood up or down in absolute terms. Names are TRL 1.16's `DPOTrainer` `loss_type`s.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dpo_exp.losses.base import LossOutput, check_beta, check_shapes, reference_output


def _logratios(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    check_beta(beta)
    check_shapes(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    return policy_chosen_logps - ref_chosen_logps, policy_rejected_logps - ref_rejected_logps


def nca_pair_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    *,
    beta: float,
) -> LossOutput:
    """Noise Contrastive Alignment for pairs.

    With rewards u_c = beta * (pi_c - ref_c), u_r = beta * (pi_r - ref_r):
      loss = -logsigmoid(u_c) - 0.5 * logsigmoid(-u_c) - 0.5 * logsigmoid(-u_r).

    Chen, He, Su, Dong, Yang, Zhu (2024), "Noise Contrastive Alignment of Language Models with
    Explicit Rewards", arXiv:2402.05369; TRL's `nca_pair`. Log-probs: SUMMED.
    """
    chosen, rejected = _logratios(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta
    )
    loss = (
        -F.logsigmoid(beta * chosen)
        - 0.5 * F.logsigmoid(-beta * chosen)
        - 0.5 * F.logsigmoid(-beta * rejected)
    )
    return reference_output(
        loss, policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta
    )


def bco_pair_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    *,
    beta: float,
) -> LossOutput:
    """Binary Classifier Optimization on pairs: chosen classified as good, rejected as bad.

      loss = -logsigmoid(beta * (pi_c - ref_c)) - logsigmoid(-beta * (pi_r - ref_r)).

    Jung, Park, Kim, Kim, Kim (2024), "Binary Classifier Optimization for Large Language Model
    Alignment", arXiv:2404.04656, without its reward shift delta (TRL 1.16's `bco_pair` has none;
    `loss=bco` is the unpaired form with the shift). Log-probs: SUMMED.
    """
    chosen, rejected = _logratios(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta
    )
    loss = -F.logsigmoid(beta * chosen) - F.logsigmoid(-beta * rejected)
    return reference_output(
        loss, policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta
    )


def sppo_hard_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    *,
    beta: float,
) -> LossOutput:
    """Self-Play Preference Optimization with hard win probabilities (1 for chosen, 0 for rejected).

      loss = (r_c - 1 / (2 beta))^2 + (r_r + 1 / (2 beta))^2, r = pi - ref (SUMMED log-ratios).

    Wu, Sun, Yuan, Ji, Yang, Gu (2024), "Self-Play Preference Optimization for Language Model
    Alignment", arXiv:2405.00675, Eq. (4.7) with P = 1 / 0 instead of PairRM's soft probabilities;
    TRL's `sppo_hard`. Here beta is 1 / eta: r_c is pulled to +1/(2 beta), r_r to -1/(2 beta).
    """
    chosen, rejected = _logratios(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta
    )
    loss = (chosen - 0.5 / beta) ** 2 + (rejected + 0.5 / beta) ** 2
    return reference_output(
        loss, policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta
    )


def apo_zero_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    *,
    beta: float,
) -> LossOutput:
    """Anchored Preference Optimization, zero anchor: raise the chosen answer, lower the rejected.

      loss = (1 - sigmoid(beta * r_c)) + sigmoid(beta * r_r), r = pi - ref (SUMMED).
    For chosen answers better than what the model writes now.

    D'Oosterlinck, Xu, Develder, Demeester, Singh, Potts, Kiela, Mehri (2024), "Anchored
    Preference Optimization and Contrastive Revisions", arXiv:2408.06266, Eq. (7); TRL's `apo_zero`.
    """
    chosen, rejected = _logratios(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta
    )
    loss = (1 - torch.sigmoid(beta * chosen)) + torch.sigmoid(beta * rejected)
    return reference_output(
        loss, policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta
    )


def apo_down_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    *,
    beta: float,
) -> LossOutput:
    """Anchored Preference Optimization, down anchor: lower both, the rejected answer more.

      loss = sigmoid(beta * r_c) + (1 - sigmoid(beta * (r_c - r_r))), r = pi - ref (SUMMED).
    For chosen answers worse than what the model writes now.

    D'Oosterlinck et al. (2024), arXiv:2408.06266, Eq. (8); TRL's `apo_down`.
    """
    chosen, rejected = _logratios(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta
    )
    loss = torch.sigmoid(beta * chosen) + (1 - torch.sigmoid(beta * (chosen - rejected)))
    return reference_output(
        loss, policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta
    )
