"""The step-0 invariant: a run that starts from its reference has policy log-probs equal to the
reference's on its first batch, so every log-ratio is 0 and the loss is its own value at 0 (ln 2
per pair for DPO, 1/(2τ)² for IPO, w/2 for KTO, 1 for the hinge loss).

A mismatch means the policy and the reference were not scored on the same tokens or weights:
masking, padding, packing or a cached reference computed on other rows, bugs that other trainers
shipped and that no loss curve shows. The run stops on its first step, naming what differs.
"""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig

from dpo_exp.errors import UserError

# |policy - reference| allowed per summed sequence log-prob: float rounding of two forwards over
# differently padded batches, relative to the log-prob's size. Half precision rounds far coarser.
TOLERANCE = {"full": (1e-3, 1e-4), "half": (5e-2, 1e-2)}  # (absolute, relative)
LOGPS = (("policy_chosen_logps", "ref_chosen_logps"), ("policy_rejected_logps", "ref_rejected_logps"),
         ("policy_logps", "ref_logps"))  # fmt: skip


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


def step_zero_figures(
    tensors: dict[str, torch.Tensor], loss: torch.Tensor, loss_at_zero: torch.Tensor
) -> dict[str, float]:
    """The largest |log-ratio|, its tolerance's scale, the loss and the loss's value at log-ratio 0."""
    pairs = [(tensors[p].detach(), tensors[r].detach()) for p, r in LOGPS if p in tensors and r in tensors]
    ratios = [(policy - reference).abs() for policy, reference in pairs]
    scales = [reference.abs() for _, reference in pairs]
    return {
        "max_abs_logratio": float(torch.cat(ratios).max()),
        "max_abs_ref_logps": float(torch.cat(scales).max()),
        "loss": float(loss.mean()),
        "loss_at_zero": float(loss_at_zero.mean()),
    }


def step_zero_problem(figures: dict[str, float], precision: str) -> str | None:
    """What differs at step 0, or None when the invariant holds."""
    absolute, relative = TOLERANCE["half" if "16" in precision else "full"]
    allowed = absolute + relative * figures["max_abs_ref_logps"]
    if figures["max_abs_logratio"] <= allowed:
        return None
    return (
        f"at step 0 the policy starts as its reference, yet a sequence's policy and reference "
        f"log-probs differ by {figures['max_abs_logratio']:.4g} (allowed {allowed:.2g}); the loss is "
        f"{figures['loss']:.6f} where its value at log-ratio 0 is {figures['loss_at_zero']:.6f}. "
        "Policy and reference were scored on different tokens, masks or weights (padding, packing, "
        "or a reference cache of other rows)"
    )


def zero_logratio_inputs(tensors: dict[str, Any]) -> dict[str, Any]:
    """The loss inputs with each reference log-prob replaced by the policy's (and KTO's KL point
    by 0): the loss there is its own value at log-ratio 0."""
    inputs = dict(tensors)
    for policy, reference in LOGPS:
        if reference in inputs:
            inputs[reference] = inputs[policy].detach()
    if "kl_baseline" in inputs:
        inputs["kl_baseline"] = torch.zeros_like(inputs["kl_baseline"])
    return inputs
