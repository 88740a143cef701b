"""The registry of losses: each loss's name in YAML, its function and what it needs."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

from dpo_exp.losses.base import LossOutput
from dpo_exp.losses.paired import dpo_loss, hinge_loss, ipo_loss, orpo_loss, robust_loss, rpo_loss, simpo_loss
from dpo_exp.losses.unpaired import kto_loss, rft_loss


@dataclass(frozen=True)
class LossSpec:
    """What the rest of the program needs to know about a loss, so nothing else branches
    on its name.

    name: the name used in YAML.
    fn: the loss function; its positional parameters name the tensors it needs
        (see ``loss_inputs``) and its keyword-only ones the hyperparameters
        (see ``loss_hyperparameters``).
    needs_reference: whether the inputs include ``ref_*_logps`` (False for orpo, simpo).
    paired: False for kto and rft, which take unpaired examples with a ``desirable`` flag.
    has_grad_weight: whether ``metrics`` includes ``grad_weight``.
    positives_only: trains on desirable examples only (rft): the built-in experiment gives it
        the passing samples rather than every labelled one.
    auto_options: hyperparameters that may be set to `auto`, to be chosen from the training
        data when a run starts (kto's desirable_weight, by ``kto_desirable_weight``).
    """

    name: str
    fn: Callable[..., LossOutput]
    needs_reference: bool
    paired: bool
    has_grad_weight: bool
    positives_only: bool = False
    auto_options: tuple[str, ...] = ()


LOSSES: dict[str, LossSpec] = {
    spec.name: spec
    for spec in (
        LossSpec("dpo", dpo_loss, needs_reference=True, paired=True, has_grad_weight=True),
        LossSpec("ipo", ipo_loss, needs_reference=True, paired=True, has_grad_weight=True),
        LossSpec(
            "kto",
            kto_loss,
            needs_reference=True,
            paired=False,
            has_grad_weight=False,
            auto_options=("desirable_weight",),
        ),
        LossSpec("orpo", orpo_loss, needs_reference=False, paired=True, has_grad_weight=False),
        LossSpec("hinge", hinge_loss, needs_reference=True, paired=True, has_grad_weight=True),
        LossSpec("robust", robust_loss, needs_reference=True, paired=True, has_grad_weight=True),
        LossSpec("simpo", simpo_loss, needs_reference=False, paired=True, has_grad_weight=True),
        LossSpec("rpo", rpo_loss, needs_reference=True, paired=True, has_grad_weight=True),
        LossSpec(
            "rft", rft_loss, needs_reference=False, paired=False, has_grad_weight=False, positives_only=True
        ),
    )
}


def get_loss(name: str) -> LossSpec:
    """The registered loss called ``name``; an unknown name raises ValueError listing the
    valid ones."""
    try:
        return LOSSES[name]
    except KeyError:
        valid = ", ".join(sorted(LOSSES))
        raise ValueError(f"unknown loss {name!r}; valid losses: {valid}") from None


def loss_inputs(spec: LossSpec) -> tuple[str, ...]:
    """Names of the tensor (positional) parameters of ``spec.fn``, in order."""
    return tuple(
        p.name
        for p in inspect.signature(spec.fn).parameters.values()
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    )


def loss_hyperparameters(spec: LossSpec) -> dict[str, object]:
    """Keyword-only parameter names of ``spec.fn`` -> default value
    (``inspect.Parameter.empty`` for required ones such as ``beta``)."""
    return {
        p.name: p.default
        for p in inspect.signature(spec.fn).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }


def takes_beta(name: str) -> bool:
    """Whether `beta` means something to the loss called ``name`` (True for an unknown name, which
    validation refuses with the valid names)."""
    return name not in LOSSES or "beta" in loss_hyperparameters(LOSSES[name])
