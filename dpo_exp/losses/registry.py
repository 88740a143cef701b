"""The registry of losses: each loss's name in YAML, its function and what it needs."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch

from dpo_exp.losses.anchored import apo_down_loss, apo_zero_loss, bco_pair_loss, nca_pair_loss, sppo_hard_loss
from dpo_exp.losses.base import LossOutput, check_beta, ref_rewards
from dpo_exp.losses.margin import aot_loss, aot_unpaired_loss, discopop_loss, exo_pair_loss, sigmoid_norm_loss
from dpo_exp.losses.paired import dpo_loss, hinge_loss, ipo_loss, orpo_loss, robust_loss, rpo_loss, simpo_loss
from dpo_exp.losses.reference_free import alphapo_loss, cpo_loss, sft_loss, slic_loss
from dpo_exp.losses.reward_aware import (
    reward_gap_bwd_kl_loss,
    reward_gap_fwd_kl_loss,
    reward_gap_sq_loss,
    reward_scaled_loss,
)
from dpo_exp.losses.unpaired import bco_loss, kto_loss, rft_loss


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
    sorts_batch: the per-example losses are of the batch's sorted margins, not of its pairs
        (aot): no per-pair weight can apply to them.
    reward: what the loss's implicit reward is, in words (`LossOutput.chosen_rewards`): the unit of
        its margins in the result block.
    """

    name: str
    fn: Callable[..., LossOutput]
    needs_reference: bool
    paired: bool
    has_grad_weight: bool
    positives_only: bool = False
    auto_options: tuple[str, ...] = ()
    sorts_batch: bool = False
    reward: str = "beta x log-ratio"


def _paired(
    name: str, fn: Callable[..., LossOutput], *, grad_weight: bool, sorts_batch: bool = False
) -> LossSpec:
    """A pairwise loss; it needs the reference exactly when it takes reference log-probs."""
    inputs = inspect.signature(fn).parameters
    return LossSpec(
        name,
        fn,
        needs_reference="ref_chosen_logps" in inputs,
        paired=True,
        has_grad_weight=grad_weight,
        sorts_batch=sorts_batch,
    )


_SINGLE_LOSSES: tuple[LossSpec, ...] = (
    _paired("dpo", dpo_loss, grad_weight=True),
    _paired("ipo", ipo_loss, grad_weight=True),
    LossSpec(
        "kto",
        kto_loss,
        needs_reference=True,
        paired=False,
        has_grad_weight=False,
        auto_options=("desirable_weight",),
    ),
    _paired("orpo", orpo_loss, grad_weight=False),
    _paired("hinge", hinge_loss, grad_weight=True),
    _paired("robust", robust_loss, grad_weight=True),
    _paired("simpo", simpo_loss, grad_weight=True),
    _paired("rpo", rpo_loss, grad_weight=True),
    LossSpec(
        "rft", rft_loss, needs_reference=False, paired=False, has_grad_weight=False, positives_only=True
    ),
    LossSpec("bco", bco_loss, needs_reference=True, paired=False, has_grad_weight=False),
    # TRL 1.16's DPOTrainer loss types, by its names (its `sigmoid` is `dpo`).
    _paired("exo_pair", exo_pair_loss, grad_weight=True),
    _paired("nca_pair", nca_pair_loss, grad_weight=False),
    _paired("bco_pair", bco_pair_loss, grad_weight=False),
    _paired("sppo_hard", sppo_hard_loss, grad_weight=False),
    _paired("aot", aot_loss, grad_weight=False, sorts_batch=True),
    _paired("aot_unpaired", aot_unpaired_loss, grad_weight=False, sorts_batch=True),
    _paired("apo_zero", apo_zero_loss, grad_weight=False),
    _paired("apo_down", apo_down_loss, grad_weight=False),
    _paired("discopop", discopop_loss, grad_weight=True),
    _paired("sft", sft_loss, grad_weight=False),
    _paired("sigmoid_norm", sigmoid_norm_loss, grad_weight=True),
    # Reference-free losses of TRL's CPOTrainer and of the SLiC paper.
    _paired("cpo", cpo_loss, grad_weight=True),
    _paired("slic", slic_loss, grad_weight=True),
    _paired("alphapo", alphapo_loss, grad_weight=True),
    # Reward-aware losses (NeMo-Aligner's rpo_sq, rpo_fwd_kl, rpo_bwd_kl, scale): the data's rewards.
    _paired("reward_gap_sq", reward_gap_sq_loss, grad_weight=False),
    _paired("reward_gap_fwd_kl", reward_gap_fwd_kl_loss, grad_weight=False),
    _paired("reward_gap_bwd_kl", reward_gap_bwd_kl_loss, grad_weight=True),
    _paired("reward_scaled", reward_scaled_loss, grad_weight=True),
)

# The per-pair numbers a loss may take from the data (`PreferencePair.chosen_score`, ...).
SCORE_INPUTS = ("chosen_scores", "rejected_scores")


def needs_scores(spec: LossSpec) -> bool:
    """Whether the loss takes each response's reward from the data."""
    return any(name in SCORE_INPUTS for name in loss_inputs(spec))


# What each loss's reward is, where it is not beta x the summed log-ratio.
REWARD_WORDS = {
    "ipo": "beta x per-token log-ratio",
    "sigmoid_norm": "beta x per-token log-ratio",
    "orpo": "beta x per-token log-prob",
    "simpo": "beta x per-token log-prob",
    "alphapo": "beta x AlphaPO's reward of the per-token log-prob",
    "cpo": "beta x log-prob",
    "slic": "log-prob",
    "sft": "per-token log-prob",
    "rft": "per-token log-prob",
}
_SINGLE_LOSSES = tuple(
    dataclasses.replace(spec, reward=REWARD_WORDS.get(spec.name, spec.reward)) for spec in _SINGLE_LOSSES
)

# Other codebases' names for our losses: TRL's `sigmoid`, open-instruct's `dpo_norm`.
ALIASES = {"sigmoid": "dpo", "dpo_norm": "sigmoid_norm"}

# The inputs a mix gives its terms: everything a paired loss may take.
MIX_INPUTS = (
    "policy_chosen_logps",
    "policy_rejected_logps",
    "ref_chosen_logps",
    "ref_rejected_logps",
    "chosen_ntokens",
    "rejected_ntokens",
    "chosen_nll",
)


def mix_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    chosen_ntokens: torch.Tensor,
    rejected_ntokens: torch.Tensor,
    chosen_nll: torch.Tensor,
    *,
    beta: float,
    terms: list[str] | tuple[str, ...] = ("sigmoid", "bco_pair", "sft"),
    weights: list[float] | tuple[float, ...] | None = (0.8, 0.2, 1.0),
    options: dict[str, dict[str, object]] | None = None,
) -> LossOutput:
    """A weighted sum of pairwise losses, as TRL combines a list of `loss_type`s with `loss_weights`.

    loss = sum_k w_k * loss_k, each term called with the same beta and its own `options[term]`
    (the term's keyword options, e.g. `{"exo_pair": {"label_smoothing": 0.01}}`). The default is
    MPO's mix (Wang et al. 2024, arXiv:2411.10442): sigmoid 0.8, bco_pair 0.2, sft 1.0.
    `weights` None weighs every term 1. Rewards: beta * (policy - ref).
    metrics: term/<name> (B,), each term's own loss before its weight.
    """
    check_beta(beta)
    terms, weights, options = (
        list(terms),
        [1.0] * len(terms) if weights is None else list(weights),
        options or {},
    )
    specs = _mix_specs(terms, weights, options)
    inputs = (policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    tensors = dict(zip(MIX_INPUTS, (*inputs, chosen_ntokens, rejected_ntokens, chosen_nll), strict=True))
    total = torch.zeros_like(policy_chosen_logps)
    metrics: dict[str, torch.Tensor] = {}
    for term, spec, weight in zip(terms, specs, weights, strict=True):
        beta_option = {"beta": beta} if "beta" in loss_hyperparameters(spec) else {}
        output = spec.fn(
            **{name: tensors[name] for name in loss_inputs(spec)}, **beta_option, **options.get(term, {})
        )
        total = total + weight * output.loss
        metrics[f"term/{term}"] = output.loss.detach()
    return LossOutput(
        loss=total,
        chosen_rewards=ref_rewards(policy_chosen_logps, ref_chosen_logps, beta),
        rejected_rewards=ref_rewards(policy_rejected_logps, ref_rejected_logps, beta),
        metrics=metrics,
    )


def _mix_specs(
    terms: list[str], weights: list[float], options: dict[str, dict[str, object]]
) -> list[LossSpec]:
    """The terms' specs; a mix that names no term, a term twice, an unpaired loss, or weights
    and options that match no term, raises ValueError."""
    if not terms or len(weights) != len(terms):
        raise ValueError(
            "a mix needs terms and one weight per term (weights null: 1 each); "
            f"got terms {terms} and weights {weights}"
        )
    if len(set(terms)) != len(terms):
        raise ValueError(f"a mix names each term once; got {terms}")
    if any(isinstance(w, bool) or not isinstance(w, int | float) for w in weights):
        raise ValueError(f"weights must be numbers, got {weights}")
    stray = sorted(set(options) - set(terms))
    if stray:
        raise ValueError(
            f"options for {', '.join(stray)}, which is not a term of the mix ({', '.join(terms)})"
        )
    specs = [get_loss(term) for term in terms]
    for term, spec in zip(terms, specs, strict=True):
        if not spec.paired or spec.fn is mix_loss:
            raise ValueError(f"a mix's terms are pairwise losses; {term} is not one")
        if needs_scores(spec):
            raise ValueError(f"{term} takes the data's rewards, which a mix does not pass to its terms")
    return specs


LOSSES: dict[str, LossSpec] = {spec.name: spec for spec in _SINGLE_LOSSES} | {
    "mix": LossSpec("mix", mix_loss, needs_reference=True, paired=True, has_grad_weight=False)
}


def get_loss(name: str) -> LossSpec:
    """The registered loss called ``name``; an unknown name raises ValueError listing the
    valid ones."""
    try:
        return LOSSES[ALIASES.get(name, name)]
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
    name = ALIASES.get(name, name)
    return name not in LOSSES or "beta" in loss_hyperparameters(LOSSES[name])


def _probe_inputs() -> dict[str, torch.Tensor]:
    """Two examples of every tensor a loss may take, with plausible values."""
    chosen, rejected = torch.tensor([-4.0, -6.0]), torch.tensor([-5.0, -5.5])
    ntokens = torch.tensor([2, 3])
    return {
        "policy_chosen_logps": chosen,
        "policy_rejected_logps": rejected,
        "ref_chosen_logps": chosen - 0.5,
        "ref_rejected_logps": rejected + 0.5,
        "chosen_ntokens": ntokens,
        "rejected_ntokens": ntokens,
        "chosen_nll": -chosen / ntokens,
        "policy_logps": chosen,
        "ref_logps": rejected,
        "ntokens": ntokens,
        "desirable": torch.tensor([True, False]),
        "kl_baseline": torch.tensor(0.1),
        "reward_shift": torch.tensor(0.05),
        "chosen_scores": torch.tensor([1.0, 0.5]),
        "rejected_scores": torch.tensor([0.0, 0.25]),
    }


def check_options(spec: LossSpec, options: dict[str, object], beta: float) -> None:
    """Call the loss once, on two examples, with these options and beta: an option value the loss
    refuses raises ValueError with the loss's own reason (a value of the wrong type, TypeError).
    `auto` options are left at their defaults: the run chooses them from its data."""
    options = {
        name: value for name, value in options.items() if name not in spec.auto_options or value != "auto"
    }
    beta_option = {"beta": beta} if "beta" in loss_hyperparameters(spec) else {}
    inputs = _probe_inputs()
    spec.fn(**{name: inputs[name] for name in loss_inputs(spec)}, **beta_option, **options)
