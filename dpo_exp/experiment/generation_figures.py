"""The figures of a generation-scored evaluation, as pure functions of per-prompt numbers.

- win rate: per prompt, 1 when the policy's sample scores above the reference's sample on that
  prompt, 1/2 on a tie, 0 below; its mean over prompts, with a 95% interval from the normal
  approximation of that paired mean (mean ± 1.96 · sd / sqrt(n), sd with n - 1), cut to [0, 1];
- KL(policy ‖ reference): from the policy's own samples y ~ policy(· | x), the mean over prompts of
  the sequence log-ratio sum_t [log policy(y_t | x, y_<t) - log reference(y_t | x, y_<t)], EOS
  included: an unbiased estimate of the sequence-level KL (the DPO paper's frontier axis), which can
  be negative on a finite sample;
- length: the mean number of tokens the policy generated per answer, EOS included.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

Z_95 = 1.96


def win_rate(policy: Sequence[float], reference: Sequence[float]) -> dict[str, float]:
    """`win_rate`, `win_rate_ci95_low`, `win_rate_ci95_high` of paired per-prompt scores."""
    if len(policy) != len(reference) or not policy:
        raise ValueError(f"win rate of {len(policy)} policy and {len(reference)} reference scores")
    outcomes = [1.0 if p > r else 0.5 if p == r else 0.0 for p, r in zip(policy, reference, strict=True)]
    count = len(outcomes)
    centre = sum(outcomes) / count
    spread = 0.0
    if count > 1:
        spread = math.sqrt(sum((o - centre) ** 2 for o in outcomes) / (count - 1)) / math.sqrt(count)
    return {
        "win_rate": centre,
        "win_rate_ci95_low": max(0.0, centre - Z_95 * spread),
        "win_rate_ci95_high": min(1.0, centre + Z_95 * spread),
    }


def kl_estimate(policy_logps: torch.Tensor, reference_logps: torch.Tensor) -> float:
    """Mean over samples of log policy(y | x) - log reference(y | x), each (N,) summed over tokens."""
    if policy_logps.shape != reference_logps.shape or policy_logps.numel() == 0:
        raise ValueError(
            f"KL of log-probs shaped {tuple(policy_logps.shape)}, {tuple(reference_logps.shape)}"
        )
    return float((policy_logps.double() - reference_logps.double()).mean())


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)
