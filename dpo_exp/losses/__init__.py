"""Preference losses as pure functions on per-sequence log-probs, and the registry of them.

`base`: the output type and helpers; `paired`: DPO and its pairwise variants; `unpaired`: KTO
and RFT; `registry`: names in YAML -> functions and what each needs; `logprobs`: logits and
labels -> per-sequence log-probs. Everything here imports only torch and the standard library.
"""

from dpo_exp.losses.base import LossOutput
from dpo_exp.losses.paired import (
    dpo_loss,
    hinge_loss,
    ipo_loss,
    orpo_loss,
    robust_loss,
    rpo_loss,
    simpo_loss,
)
from dpo_exp.losses.registry import (
    ALIASES,
    LOSSES,
    SCORE_INPUTS,
    LossSpec,
    check_options,
    get_loss,
    loss_hyperparameters,
    loss_inputs,
    needs_scores,
    takes_beta,
)
from dpo_exp.losses.unpaired import kto_desirable_weight, kto_loss, rft_loss

__all__ = [
    "ALIASES",
    "check_options",
    "LOSSES",
    "SCORE_INPUTS",
    "LossOutput",
    "LossSpec",
    "dpo_loss",
    "get_loss",
    "hinge_loss",
    "ipo_loss",
    "kto_desirable_weight",
    "kto_loss",
    "loss_hyperparameters",
    "loss_inputs",
    "needs_scores",
    "orpo_loss",
    "rft_loss",
    "robust_loss",
    "rpo_loss",
    "simpo_loss",
    "takes_beta",
]
