"""Every loss TRL 1.16 has, equal to TRL's own code on the same per-sequence log-probs.

TRL computes its DPO losses inside `DPOTrainer._compute_loss`, from a model's per-token log-probs.
The harness below calls that method on a trainer built without `__init__` (only the attributes
the method reads) and a stand-in model whose per-token log-probs sum, over each completion, to the
per-sequence log-probs our losses take. Reference log-probs go in as precomputed ones. CPO, SimPO,
AlphaPO and ORPO are compared with `CPOTrainer.cpo_loss` and `ORPOTrainer.odds_ratio_loss`, which
take per-sequence log-probs directly. Losses and rewards must agree to 1e-6.
"""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch
from torch.testing import assert_close

from dpo_exp.losses import get_loss, loss_inputs

trl_dpo = pytest.importorskip("trl.trainer.dpo_trainer", reason="TRL is installed with the dev extra")
from trl.experimental.cpo.cpo_trainer import CPOTrainer  # noqa: E402
from trl.experimental.orpo.orpo_trainer import ORPOTrainer  # noqa: E402

TOL = {"rtol": 1e-6, "atol": 1e-6}
DPO_LOSS_TYPES = ["sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
                  "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm"]  # fmt: skip
# TRL logs beta * SUMMED log-ratios as rewards for every loss type; ours for IPO and length-
# normalised DPO are beta * per-token means, the scale those losses compare on.
PER_TOKEN_REWARDS = {"ipo", "sigmoid_norm"}
# Losses reading the whole batch (sorting, a batch-level token mean): compared on batches only.
BATCH_LEVEL = {"aot", "aot_unpaired", "sft"}


def pairs(batch: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    chosen_ntokens = torch.randint(1, 12, (batch,), generator=g)
    rejected_ntokens = torch.randint(1, 12, (batch,), generator=g)

    def logps(ntokens: torch.Tensor) -> torch.Tensor:
        return -(0.2 + torch.rand(batch, generator=g) * 2.5) * ntokens

    tensors = {
        "policy_chosen_logps": logps(chosen_ntokens),
        "policy_rejected_logps": logps(rejected_ntokens),
        "ref_chosen_logps": logps(chosen_ntokens),
        "ref_rejected_logps": logps(rejected_ntokens),
        "chosen_ntokens": chosen_ntokens,
        "rejected_ntokens": rejected_ntokens,
    }
    tensors["chosen_nll"] = -tensors["policy_chosen_logps"] / chosen_ntokens
    return tensors


def per_token(logps: torch.Tensor, width: int) -> torch.Tensor:
    """(B, width) per-token log-probs whose sum over each row is exactly that row's log-prob: all
    of it on the completion's first token (sums and token means are all TRL takes of them)."""
    token_logps = torch.zeros(len(logps), width)
    token_logps[:, 0] = logps
    return token_logps


def trl_dpo_loss(tensors: dict[str, torch.Tensor], loss_types: list[str], beta: float, **args) -> dict:
    """TRL's `_compute_loss` on these log-probs: its loss and its logged reward means."""
    ntokens = torch.cat([tensors["chosen_ntokens"], tensors["rejected_ntokens"]])
    width = int(ntokens.max()) + 1
    logps = torch.cat([tensors["policy_chosen_logps"], tensors["policy_rejected_logps"]])
    token_logps = per_token(logps, width - 1)
    # Token t + 1 of a row is predicted at position t: the mask starts one place after the log-probs.
    completion_mask = torch.zeros(len(ntokens), width, dtype=torch.long)
    completion_mask[:, 1:] = torch.arange(width - 1)[None, :] < ntokens[:, None]

    def model(**kwargs):
        zeros = torch.zeros_like(token_logps)
        return SimpleNamespace(log_probs=token_logps, entropy=zeros, mean_logits=zeros,
                               is_top1=zeros.bool(), log_sum_sq_probs=zeros)  # fmt: skip

    model.training = True
    identity = SimpleNamespace(device=torch.device("cpu"), gather=lambda x: x, gather_for_metrics=lambda x: x)
    trainer = trl_dpo.DPOTrainer.__new__(trl_dpo.DPOTrainer)
    trainer.__dict__.update(
        model=model, accelerator=identity, aux_loss_enabled=False, ld_alpha=None, precompute_ref_logps=True,
        f_divergence_type=args.get("f_divergence_type", "reverse_kl"),
        f_alpha_divergence_coef=args.get("f_alpha_divergence_coef", 0.5),
        loss_types=loss_types, loss_weights=args.get("loss_weights") or [1.0] * len(loss_types), beta=beta,
        label_smoothing=args.get("label_smoothing", 0.0), use_weighting=False,
        args=SimpleNamespace(discopop_tau=args.get("discopop_tau", 0.05)),
        _metrics={"train": defaultdict(list)}, _total_train_tokens=0, _tp_size=1,
    )  # fmt: skip
    inputs = {
        "input_ids": torch.zeros(len(ntokens), width, dtype=torch.long),
        "attention_mask": torch.ones(len(ntokens), width, dtype=torch.long),
        "completion_mask": completion_mask,
        "ref_chosen_logps": tensors["ref_chosen_logps"],
        "ref_rejected_logps": tensors["ref_rejected_logps"],
    }
    loss = trainer._compute_loss(model, inputs, return_outputs=False)
    metrics = trainer._metrics["train"]
    return {"loss": loss, "chosen": metrics["rewards/chosen"][0], "rejected": metrics["rewards/rejected"][0]}


def ours(name: str, tensors: dict[str, torch.Tensor], beta: float, **options):
    spec = get_loss(name)
    beta_option = {"beta": beta} if name != "sft" else {}
    return spec.fn(**{k: tensors[k] for k in loss_inputs(spec)}, **beta_option, **options)


# TRL's options -> ours, for the loss types that take them.
OPTIONS = {
    "robust": ({"label_smoothing": 0.2}, {"label_smoothing": 0.2}),
    "exo_pair": ({"label_smoothing": 1e-3}, {"label_smoothing": 1e-3}),
    "aot": ({"label_smoothing": 0.1}, {"label_smoothing": 0.1}),
    "aot_unpaired": ({"label_smoothing": 0.1}, {"label_smoothing": 0.1}),
    "discopop": ({"discopop_tau": 0.2}, {"tau": 0.2}),
}


def check_against_trl(
    loss_type: str, tensors: dict[str, torch.Tensor], beta: float, trl_args: dict, options: dict
):
    expected = trl_dpo_loss(tensors, [loss_type], beta, **trl_args)
    out = ours(loss_type, tensors, beta, **options)
    assert_close(out.loss.mean(), expected["loss"], **TOL)
    if loss_type in PER_TOKEN_REWARDS:  # ours times the token count is TRL's
        chosen = (out.chosen_rewards * tensors["chosen_ntokens"]).mean()
        rejected = (out.rejected_rewards * tensors["rejected_ntokens"]).mean()
    elif loss_type == "sft":  # no beta, no reference: per-token means (TRL logs beta * log-ratios)
        return
    else:
        chosen, rejected = out.chosen_rewards.mean(), out.rejected_rewards.mean()
    assert_close(chosen.item(), expected["chosen"], **TOL)
    assert_close(rejected.item(), expected["rejected"], **TOL)


@pytest.mark.parametrize("loss_type", DPO_LOSS_TYPES)
@pytest.mark.parametrize(("beta", "seed"), [(0.1, 0), (0.5, 1), (2.0, 2)])
def test_every_dpo_loss_type_equals_trls_on_a_batch(loss_type: str, beta: float, seed: int):
    trl_args, options = OPTIONS.get(loss_type, ({}, {}))
    check_against_trl(loss_type, pairs(8, seed), beta, trl_args, options)


@pytest.mark.parametrize("loss_type", sorted(set(DPO_LOSS_TYPES) - BATCH_LEVEL))
def test_every_per_pair_loss_type_equals_trls_pair_by_pair(loss_type: str):
    trl_args, options = OPTIONS.get(loss_type, ({}, {}))
    tensors = pairs(6, seed=7)
    for i in range(6):
        one = {name: value[i : i + 1] for name, value in tensors.items()}
        check_against_trl(loss_type, one, 0.3, trl_args, options)


F_DIVERGENCE_TYPES = ["sigmoid", "sigmoid_norm", "hinge", "ipo", "exo_pair", "robust", "discopop"]


@pytest.mark.parametrize("loss_type", F_DIVERGENCE_TYPES)
@pytest.mark.parametrize(
    ("divergence", "alpha"),
    [("forward_kl", 0.5), ("js_divergence", 0.5), ("alpha_divergence", 0.5), ("alpha_divergence", 0.3)],
)
def test_f_divergences_equal_trls(loss_type: str, divergence: str, alpha: float):
    trl_args, options = OPTIONS.get(loss_type, ({}, {}))
    trl_args = {**trl_args, "f_divergence_type": divergence, "f_alpha_divergence_coef": alpha}
    options = {**options, "divergence": divergence, "divergence_alpha": alpha}
    tensors = pairs(8, seed=3)
    # Small log-ratios keep forward KL's exp(-log t) in range, as in training near the reference.
    for name in ("policy_chosen_logps", "policy_rejected_logps"):
        tensors[name] = tensors[f"ref_{name.removeprefix('policy_')}"] + torch.linspace(-2, 2, 8)
    check_against_trl(loss_type, tensors, 0.4, trl_args, options)


def test_mpo_mix_equals_trls_weighted_loss_types():
    tensors, beta = pairs(8, seed=4), 0.2
    terms, weights = ["sigmoid", "bco_pair", "sft"], [0.8, 0.2, 1.0]
    expected = trl_dpo_loss(tensors, terms, beta, loss_weights=weights)
    out = ours("mix", tensors, beta, terms=terms, weights=weights)
    assert_close(out.loss.mean(), expected["loss"], **TOL)
    assert_close(out.chosen_rewards.mean().item(), expected["chosen"], **TOL)
    assert_close(out.rejected_rewards.mean().item(), expected["rejected"], **TOL)
    for term in terms:  # each term logged, before its weight
        single = trl_dpo_loss(tensors, [term], beta)["loss"]
        assert_close(out.metrics[f"term/{term}"].mean(), single, **TOL)


# ----------------------------------------------------------------------------- CPOTrainer, ORPOTrainer


def cpo_trainer(loss_type: str, beta: float, *, alpha: float = 0.0, gamma: float = 0.5, eps: float = 0.0):
    device = SimpleNamespace(device=torch.device("cpu"))
    return SimpleNamespace(
        loss_type=loss_type,
        beta=beta,
        alpha=alpha,
        simpo_gamma=gamma,
        label_smoothing=eps,
        accelerator=device,
    )


@pytest.mark.parametrize(("eps", "nll_weight"), [(0.0, 1.0), (0.1, 0.5)])
def test_cpo_equals_trls_cpo_loss_plus_its_nll(eps: float, nll_weight: float):
    tensors, beta = pairs(8, seed=5), 0.3
    c, r = tensors["policy_chosen_logps"], tensors["policy_rejected_logps"]
    losses, chosen, rejected = CPOTrainer.cpo_loss(cpo_trainer("sigmoid", beta, eps=eps), c, r)
    # CPOTrainer adds cpo_alpha times the cross-entropy of the chosen tokens, a token-level mean.
    nll = -c.sum() / tensors["chosen_ntokens"].sum()
    out = ours("cpo", tensors, beta, nll_weight=nll_weight, label_smoothing=eps)
    assert_close(out.loss.mean(), losses.mean() + nll_weight * nll, **TOL)
    assert_close(out.chosen_rewards, chosen, **TOL)
    assert_close(out.rejected_rewards, rejected, **TOL)


@pytest.mark.parametrize(("name", "alpha"), [("simpo", 0.0), ("alphapo", 0.25), ("alphapo", 0.6)])
def test_simpo_and_alphapo_equal_trls_cpo_loss(name: str, alpha: float):
    """CPOTrainer's simpo loss type takes per-token-mean log-probs; alpha != 0 is AlphaPO."""
    tensors, beta, gamma = pairs(8, seed=6), 2.0, 0.7
    chosen_mean = tensors["policy_chosen_logps"] / tensors["chosen_ntokens"]
    rejected_mean = tensors["policy_rejected_logps"] / tensors["rejected_ntokens"]
    trainer = cpo_trainer("simpo", beta, alpha=alpha, gamma=gamma)
    losses, chosen, rejected = CPOTrainer.cpo_loss(trainer, chosen_mean, rejected_mean)
    options = {"gamma": gamma} | ({"alpha": alpha} if name == "alphapo" else {})
    out = ours(name, tensors, beta, **options)
    assert_close(out.loss, losses, **TOL)
    assert_close(out.chosen_rewards, chosen, **TOL)
    assert_close(out.rejected_rewards, rejected, **TOL)


def test_orpo_equals_trls_odds_ratio_loss():
    """TRL's ORPO returns beta * logsigmoid(log-odds ratio), subtracted from the NLL."""
    tensors, beta = pairs(8, seed=8), 0.1
    chosen_mean = tensors["policy_chosen_logps"] / tensors["chosen_ntokens"]
    rejected_mean = tensors["policy_rejected_logps"] / tensors["rejected_ntokens"]
    trainer = SimpleNamespace(beta=beta, accelerator=SimpleNamespace(device=torch.device("cpu")))
    ratio_term, chosen, rejected, _, log_odds = ORPOTrainer.odds_ratio_loss(
        trainer, chosen_mean, rejected_mean
    )
    out = ours("orpo", tensors, beta)
    assert_close(out.loss, tensors["chosen_nll"] - ratio_term, **TOL)
    assert_close(out.metrics["log_odds_ratio"].mean(), log_odds, **TOL)
    assert_close(out.chosen_rewards, chosen, **TOL)
    assert_close(out.rejected_rewards, rejected, **TOL)
