"""The step-0 invariant: a run that starts from its reference has policy log-probs equal to the
reference's on its first batch, so every log-ratio is 0 and the loss is its own value at 0 (ln 2
per pair for DPO, 1/(2τ)² for IPO, w/2 for KTO, 1 for the hinge loss).

A mismatch means the policy and the reference were not scored on the same tokens or weights:
masking, padding, packing or a cached reference computed on other rows, bugs that other trainers
shipped and that no loss curve shows. The run stops on its first step, naming what differs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from omegaconf import DictConfig

from dpo_exp.errors import UserError

# |policy - reference| allowed per summed sequence log-prob, in epsilons of the dtype the policy
# computes in per unit of the sequence's rounding scale (`step_zero_tolerance`). FACTOR is about
# twice the largest seen in correct runs (bf16 compute against an fp32 reference, hidden size 256),
# and small enough that a reference stored in bf16 (half an ulp: 2 at a log-prob of -962) is refused.
FACTOR = 3.0
# Never tighter than this (absolute, relative to |log-prob|): in float32 the order of reductions in
# kernels chosen per batch shape, not the dtype's rounding, sets the difference.
FLOOR = (1e-3, 1e-4)
LOGPS = (("policy_chosen_logps", "ref_chosen_logps", "chosen_ntokens"),
         ("policy_rejected_logps", "ref_rejected_logps", "rejected_ntokens"),
         ("policy_logps", "ref_logps", "ntokens"))  # fmt: skip


class StepZeroMismatch(UserError, RuntimeError):
    """The first step of a run from its reference found policy and reference log-probs unequal."""


def starts_from_reference(model_cfg: DictConfig, *, needs_reference: bool) -> bool:
    """Whether the policy is its reference at step 0: the reference is a copy of the initial policy
    (no `ref_path`, no other dtype), dropout is off, and a loaded adapter is the reference too."""
    if not needs_reference or model_cfg.get("ref_path") is not None or model_cfg.get("ref_dtype") is not None:
        return False
    if model_cfg.get("dropout", False):
        return False
    return model_cfg.get("adapter_path") is None or model_cfg.get("adapter_reference") == "adapter"


def step_zero_tolerance(ref_logps: torch.Tensor, ntokens: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """|policy - reference| allowed per summed log-prob of a policy computing in `dtype`: FACTOR
    epsilons per unit of rounding scale, and at least FLOOR. A token's rounding error is about its
    log-prob's size (at least 1 nat, as the logits are) times epsilon; independent errors of n
    tokens add up as sqrt(n)."""
    ntokens = ntokens.float().clamp(min=1)
    scale = ntokens.sqrt() * (ref_logps.abs() / ntokens).clamp(min=1.0)
    floor = FLOOR[0] + FLOOR[1] * ref_logps.abs()
    return torch.maximum(FACTOR * torch.finfo(dtype).eps * scale, floor)


def step_zero_figures(
    tensors: dict[str, torch.Tensor], loss: torch.Tensor, loss_at_zero: torch.Tensor, dtype: torch.dtype
) -> dict[str, Any]:
    """The largest |log-ratio|; the sequence furthest past its tolerance (its |log-ratio|, the
    tolerance, its reference log-prob and token count); the dtype; the loss and its value at 0."""
    present = [names for names in LOGPS if all(name in tensors for name in names)]
    policy, reference, ntokens = (torch.cat([tensors[names[i]].detach().float() for names in present])
                                  for i in range(3))  # fmt: skip
    ratios = (policy - reference).abs()
    allowed = step_zero_tolerance(reference, ntokens, dtype)
    worst = int((ratios / allowed).argmax())
    return {
        "max_abs_logratio": float(ratios.max()),
        "worst_abs_logratio": float(ratios[worst]),
        "allowed": float(allowed[worst]),
        "worst_ref_logps": float(reference[worst]),
        "worst_ntokens": int(ntokens[worst]),
        "dtype": str(dtype).removeprefix("torch."),
        "loss": float(loss.mean()),
        "loss_at_zero": float(loss_at_zero.mean()),
    }


def step_zero_problem(figures: dict[str, Any]) -> str | None:
    """What differs at step 0, or None when the invariant holds."""
    if figures["worst_abs_logratio"] <= figures["allowed"]:
        return None
    return (
        f"at step 0 the policy starts as its reference, yet a sequence's policy and reference "
        f"log-probs differ by {figures['worst_abs_logratio']:.4g} (allowed {figures['allowed']:.3g} for "
        f"a log-prob of {figures['worst_ref_logps']:.4g} over {figures['worst_ntokens']} tokens in "
        f"{figures['dtype']}); the loss is {figures['loss']:.6f} where its value at log-ratio 0 is "
        f"{figures['loss_at_zero']:.6f}. Policy and reference were scored on different tokens, masks "
        "or weights (padding, packing, or a reference cache of other rows)"
    )


def coarsest_dtype(dtypes: Iterable[torch.dtype]) -> torch.dtype:
    """The floating dtype with the largest epsilon: the one whose rounding a forward pass through
    tensors of all of them (weights, autocast's) is bound by."""
    return max(set(dtypes), key=lambda dtype: torch.finfo(dtype).eps)


def zero_logratio_inputs(tensors: dict[str, Any]) -> dict[str, Any]:
    """The loss inputs with each reference log-prob replaced by the policy's (and KTO's KL point
    by 0): the loss there is its own value at log-ratio 0."""
    inputs = dict(tensors)
    for policy, reference, _ in LOGPS:
        if reference in inputs:
            inputs[reference] = inputs[policy].detach()
    if "kl_baseline" in inputs:
        inputs["kl_baseline"] = torch.zeros_like(inputs["kl_baseline"])
    return inputs
