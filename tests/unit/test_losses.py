"""Hand-computed values for every loss in dpo_exp.losses, plus the registry contract.

Notation: h = (pi_c - ref_c) - (pi_r - ref_r); sigma is the logistic function.
Useful constants: ln 2 = 0.693147; -log sigma(1) = log(1 + e^-1) = 0.313262;
-log sigma(-1) = 1.313262; sigma(1) = 0.731059.
"""

from __future__ import annotations

import inspect
import math

import pytest
import torch
from torch.testing import assert_close

from dpo_exp.losses import (
    LOSSES,
    LossOutput,
    dpo_loss,
    get_loss,
    hinge_loss,
    ipo_loss,
    kto_desirable_weight,
    kto_loss,
    loss_hyperparameters,
    loss_inputs,
    orpo_loss,
    rft_loss,
    robust_loss,
    rpo_loss,
    simpo_loss,
)

TOL = {"rtol": 1e-5, "atol": 1e-5}


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def pair_with_margin(*margins: float) -> dict[str, torch.Tensor]:
    """Four logps tensors whose h equals each margin: pi_c = -10 + h, everything else -10."""
    n = len(margins)
    return {
        "policy_chosen_logps": t(*margins) - 10.0,
        "policy_rejected_logps": torch.full((n,), -10.0),
        "ref_chosen_logps": torch.full((n,), -10.0),
        "ref_rejected_logps": torch.full((n,), -10.0),
    }


# ----------------------------------------------------------------------------- DPO


@pytest.mark.parametrize("beta", [0.01, 0.1, 0.5, 1.0, 10.0])
def test_dpo_at_zero_margin_is_ln2(beta: float) -> None:
    """h = 0: -log sigma(0) = ln 2 = 0.693147, whatever beta; grad weight sigma(0) = 0.5."""
    out = dpo_loss(**pair_with_margin(0.0, 0.0), beta=beta)
    assert_close(out.loss, t(0.693147, 0.693147), **TOL)
    assert_close(out.metrics["grad_weight"], t(0.5, 0.5), **TOL)


def test_dpo_reference_equal_to_policy_is_ln2() -> None:
    """TRL's invariant: ref == policy gives h = 0 for any log-probs."""
    policy_c, policy_r = t(-3.0, -40.0, -7.5), t(-9.0, -2.0, -100.0)
    out = dpo_loss(policy_c, policy_r, policy_c.clone(), policy_r.clone(), beta=0.3)
    assert_close(out.loss, torch.full((3,), math.log(2)), **TOL)


def test_dpo_beta_01_margin_10() -> None:
    """beta * h = 0.1 * 10 = 1: -log sigma(1) = log(1 + e^-1) = 0.313262;
    grad_weight = sigma(-1) = 0.268941. Rewards: chosen 0.1 * (0 - (-10)) = 1, rejected 0."""
    out = dpo_loss(**pair_with_margin(10.0), beta=0.1)
    assert_close(out.loss, t(0.313262), **TOL)
    assert_close(out.metrics["grad_weight"], t(0.268941), **TOL)
    assert_close(out.chosen_rewards, t(1.0), **TOL)
    assert_close(out.rejected_rewards, t(0.0), **TOL)


def test_dpo_label_smoothing() -> None:
    """eps = 0.1, beta * h = 1:
    -(0.9) * log sigma(1) - 0.1 * log sigma(-1) = 0.9 * 0.313262 + 0.1 * 1.313262
    = 0.281936 + 0.131326 = 0.413262."""
    out = dpo_loss(**pair_with_margin(10.0), beta=0.1, label_smoothing=0.1)
    assert_close(out.loss, t(0.413262), **TOL)


def test_dpo_loss_decreases_when_policy_chosen_increases() -> None:
    """Sign check: raising pi_c raises h and must lower the loss (negative gradient)."""
    low = dpo_loss(**pair_with_margin(-1.0), beta=0.5).loss
    high = dpo_loss(**pair_with_margin(1.0), beta=0.5).loss
    assert high.item() < low.item()

    inputs = pair_with_margin(0.0)
    policy_c = inputs.pop("policy_chosen_logps").requires_grad_()
    dpo_loss(policy_c, **inputs, beta=0.5).loss.sum().backward()
    # d/dpi_c [-log sigma(beta h)] = -beta * sigma(-beta h) = -0.5 * 0.5 = -0.25
    assert_close(policy_c.grad, t(-0.25), **TOL)


def test_dpo_large_margins_are_finite() -> None:
    """logsigmoid, not log(sigmoid): -log sigma(-1000) = 1000, not inf."""
    out = dpo_loss(**pair_with_margin(-1e4, 1e4), beta=0.1)
    assert_close(out.loss, t(1000.0, 0.0), **TOL)


@pytest.mark.parametrize("eps", [-0.1, 0.5, 0.7])
def test_dpo_label_smoothing_out_of_range_raises(eps: float) -> None:
    with pytest.raises(ValueError, match="label_smoothing"):
        dpo_loss(**pair_with_margin(0.0), beta=0.1, label_smoothing=eps)


def test_mismatched_shapes_raise() -> None:
    """(B,) against (B, 1) would broadcast to (B, B) silently."""
    inputs = pair_with_margin(0.0, 1.0)
    inputs["ref_chosen_logps"] = inputs["ref_chosen_logps"].unsqueeze(1)
    with pytest.raises(ValueError, match="same shape"):
        dpo_loss(**inputs, beta=0.1)


# ----------------------------------------------------------------------------- IPO


def test_ipo_beta_01_at_zero_margin_is_25() -> None:
    """h' = 0: (0 - 1 / (2 * 0.1))^2 = (-5)^2 = 25."""
    out = ipo_loss(**pair_with_margin(0.0), chosen_ntokens=t(3), rejected_ntokens=t(7), beta=0.1)
    assert_close(out.loss, t(25.0), **TOL)
    assert_close(out.metrics["grad_weight"], t(10.0), **TOL)  # 2 * |0 - 5|


def test_ipo_length_normalisation_divides_by_token_counts() -> None:
    """pi_c - ref_c = -10 - (-20) = 10 over 5 tokens -> 2;
    pi_r - ref_r = -30 - (-24) = -6 over 3 tokens -> -2; h' = 2 - (-2) = 4.
    beta = 0.1: (4 - 5)^2 = 1. Rewards are per-token: 0.1 * 2 = 0.2 and 0.1 * -2 = -0.2.
    Without normalisation h = 10 - (-6) = 16: (16 - 5)^2 = 121."""
    args = (t(-10.0), t(-30.0), t(-20.0), t(-24.0), torch.tensor([5]), torch.tensor([3]))
    out = ipo_loss(*args, beta=0.1)
    assert_close(out.loss, t(1.0), **TOL)
    assert_close(out.chosen_rewards, t(0.2), **TOL)
    assert_close(out.rejected_rewards, t(-0.2), **TOL)
    assert_close(out.metrics["grad_weight"], t(2.0), **TOL)  # 2 * |4 - 5|

    summed = ipo_loss(*args, beta=0.1, length_normalize=False)
    assert_close(summed.loss, t(121.0), **TOL)
    assert_close(summed.chosen_rewards, t(1.0), **TOL)


# ----------------------------------------------------------------------------- KTO


@pytest.mark.parametrize("beta", [0.1, 1.0])
def test_kto_at_reference_point_is_half_weight(beta: float) -> None:
    """r = z0: 1 - sigma(0) = 0.5, times w_D = 2 (desirable) or w_U = 3 (undesirable)."""
    z0 = torch.tensor(1.5)
    policy = t(-10.0, -20.0, -30.0)
    ref = policy - 1.5  # r = 1.5 = z0 everywhere
    desirable = torch.tensor([True, False, True])
    out = kto_loss(
        policy,
        ref,
        desirable,
        z0,
        beta=beta,
        desirable_weight=2.0,
        undesirable_weight=3.0,
    )
    assert_close(out.loss, t(1.0, 1.5, 1.0), **TOL)
    assert_close(out.chosen_rewards, t(1.5 * beta, 1.5 * beta), **TOL)
    assert_close(out.rejected_rewards, t(1.5 * beta), **TOL)
    assert_close(out.metrics["kl"], torch.tensor(1.5), **TOL)
    assert out.metrics["kl"].shape == ()


def test_kto_off_reference_point() -> None:
    """beta = 0.1, z0 = 2, r = 12 so beta * (r - z0) = 1:
    desirable:   w_D * (1 - sigma(1))  = 1 * 0.268941 = 0.268941;
    undesirable: w_U * (1 - sigma(-1)) = 2 * 0.731059 = 1.462117."""
    policy, ref = t(-8.0, -8.0), t(-20.0, -20.0)
    out = kto_loss(
        policy,
        ref,
        torch.tensor([True, False]),
        torch.tensor(2.0),
        beta=0.1,
        undesirable_weight=2.0,
    )
    assert_close(out.loss, t(0.268941, 1.462117), **TOL)


def test_kto_all_desirable_gives_empty_rejected_rewards_and_detached_baseline() -> None:
    z0 = torch.tensor(0.3, requires_grad=True)
    policy = t(-1.0, -2.0).requires_grad_()
    out = kto_loss(policy, t(-1.0, -1.0), torch.tensor([True, True]), z0, beta=0.1)
    assert out.rejected_rewards.shape == (0,)
    assert out.chosen_rewards.shape == (2,)
    out.loss.sum().backward()
    assert policy.grad is not None
    assert z0.grad is None  # z0 is a constant to the loss


@pytest.mark.parametrize(
    ("n_desirable", "n_undesirable", "undesirable_weight", "expected"),
    [
        # balanced: 1.0 * 100 / 100 = 1, already in [1, 4/3] -> 1.0
        (100, 100, 1.0, 1.0),
        # a few more desirable: 120 / 100 = 1.2, in range -> 1.0
        (120, 100, 1.0, 1.0),
        # few desirable: 10 / 30 = 1/3 < 1 -> the low end, w_D = 30 / 10 = 3 (ratio 1)
        (10, 30, 1.0, 3.0),
        # slightly fewer desirable: 100 / 120 -> w_D = 120 / 100 = 1.2
        (100, 120, 1.0, 1.2),
        # many desirable: 90 / 10 = 9 > 4/3 -> the high end, w_D = (4/3) * 10 / 90 = 4/27 (ratio 4/3)
        (90, 10, 1.0, 4 / 27),
        # w_U scales n_U: 2 * 100 / 100 -> w_D = 2 * 100 / 100 = 2 (ratio 1)
        (100, 100, 2.0, 2.0),
        # w_U = 0.5: 100 / (0.5 * 100) = 2 > 4/3 -> w_D = (4/3) * 0.5 = 2/3
        (100, 100, 0.5, 2 / 3),
    ],
)
def test_kto_desirable_weight_follows_the_papers_rule(
    n_desirable: int, n_undesirable: int, undesirable_weight: float, expected: float
) -> None:
    """lambda_D = clamp(1, lo=lambda_U*n_U/n_D, hi=(4/3)*lambda_U*n_U/n_D) (Ethayarajh et al. 2024)."""
    weight = kto_desirable_weight(n_desirable, n_undesirable, undesirable_weight=undesirable_weight)
    assert weight == pytest.approx(expected, rel=1e-12)
    ratio = weight * n_desirable / (undesirable_weight * n_undesirable)
    assert 1 - 1e-12 <= ratio <= 4 / 3 + 1e-12


def test_kto_desirable_weight_needs_both_kinds_of_example() -> None:
    with pytest.raises(ValueError, match=r"no desirable examples \(n_D 0, n_U 40\)"):
        kto_desirable_weight(0, 40)
    with pytest.raises(ValueError, match="no weighted undesirable examples"):
        kto_desirable_weight(40, 0)
    with pytest.raises(ValueError, match="no weighted undesirable examples"):
        kto_desirable_weight(40, 10, undesirable_weight=0.0)


def test_kto_rejects_non_bool_desirable_and_non_scalar_baseline() -> None:
    with pytest.raises(ValueError, match="bool"):
        kto_loss(t(-1.0), t(-1.0), torch.tensor([1]), torch.tensor(0.0), beta=0.1)
    with pytest.raises(ValueError, match="scalar"):
        kto_loss(t(-1.0), t(-1.0), torch.tensor([True]), t(0.0, 1.0), beta=0.1)
    with pytest.raises(ValueError, match="weight"):
        kto_loss(
            t(-1.0),
            t(-1.0),
            torch.tensor([True]),
            torch.tensor(0.0),
            beta=0.1,
            desirable_weight=-1.0,
        )


# ----------------------------------------------------------------------------- ORPO


def test_orpo_hand_values() -> None:
    """Mean probabilities 0.5 (chosen, 4 tokens) and 0.2 (rejected, 2 tokens):
    m_c = ln 0.5, m_r = ln 0.2; odds 0.5/0.5 = 1 and 0.2/0.8 = 0.25;
    log_odds_ratio = log 1 - log 0.25 = 1.386294;
    or_loss = -log sigma(1.386294) = log(1 + 0.25) = 0.223144.
    nll = -ln 0.5 = 0.693147; beta = 0.1: loss = 0.693147 + 0.1 * 0.223144 = 0.715461."""
    nll = t(0.693147)
    out = orpo_loss(
        t(4 * math.log(0.5)),
        t(2 * math.log(0.2)),
        torch.tensor([4]),
        torch.tensor([2]),
        nll,
        beta=0.1,
    )
    assert_close(out.metrics["log_odds_ratio"], t(1.386294), **TOL)
    assert_close(out.metrics["or_loss"], t(0.223144), **TOL)
    assert_close(out.metrics["nll"], nll, **TOL)
    assert_close(out.loss, t(0.715461), **TOL)
    assert_close(out.chosen_rewards, t(0.1 * math.log(0.5)), **TOL)
    assert_close(out.rejected_rewards, t(0.1 * math.log(0.2)), **TOL)


def test_orpo_is_finite_at_extreme_mean_logps() -> None:
    """m -> 0 (p -> 1) would make log(1 - p) = -inf without the clamp; m = -1000 must give
    log-odds ~ m. Values and gradients stay finite."""
    chosen = t(0.0, -1e-9, -1000.0, -3.0).requires_grad_()
    rejected = t(-1000.0, -2.0, 0.0, -1e-12).requires_grad_()
    ones = torch.ones(4)
    out = orpo_loss(chosen, rejected, ones, ones, -chosen, beta=1.0)
    assert torch.isfinite(out.loss).all()
    assert torch.isfinite(out.metrics["log_odds_ratio"]).all()
    out.loss.sum().backward()
    assert torch.isfinite(chosen.grad).all()
    assert torch.isfinite(rejected.grad).all()
    # m_c = -1000 vs m_r clamped to -1e-6: log-odds -1000 vs log(1e-6) ~ +13.8.
    assert_close(out.metrics["log_odds_ratio"][2], torch.tensor(-1000.0 - 13.815510), **TOL)


# ----------------------------------------------------------------------------- hinge


def test_hinge_hand_values() -> None:
    """beta = 0.1: h = 5 -> relu(1 - 0.5) = 0.5 (grad weight 1);
    h = 20 -> relu(1 - 2) = 0 (grad weight 0); h = -10 -> relu(2) = 2 (grad weight 1)."""
    out = hinge_loss(**pair_with_margin(5.0, 20.0, -10.0), beta=0.1)
    assert_close(out.loss, t(0.5, 0.0, 2.0), **TOL)
    assert_close(out.metrics["grad_weight"], t(1.0, 0.0, 1.0), **TOL)


# ----------------------------------------------------------------------------- robust


def test_robust_hand_value() -> None:
    """eps = 0.1, beta * h = 1, a = -log sigma(1) = 0.313262, -log sigma(-1) = a + 1:
    (0.9 * a - 0.1 * (a + 1)) / 0.8 = (0.8 a - 0.1) / 0.8 = a - 0.125 = 0.188262.
    grad_weight = (0.9 * sigma(-1) + 0.1 * sigma(1)) / 0.8 = (0.242047 + 0.073106) / 0.8 = 0.393941.
    With eps = 0 it is plain DPO."""
    out = robust_loss(**pair_with_margin(10.0), beta=0.1, label_smoothing=0.1)
    assert_close(out.loss, t(0.188262), **TOL)
    assert_close(out.metrics["grad_weight"], t(0.393941), **TOL)
    plain = robust_loss(**pair_with_margin(10.0), beta=0.1, label_smoothing=0.0)
    assert_close(plain.loss, t(0.313262), **TOL)


@pytest.mark.parametrize("eps", [0.5, 0.6, -0.01])
def test_robust_rejects_label_smoothing_out_of_range(eps: float) -> None:
    with pytest.raises(ValueError, match="label_smoothing"):
        robust_loss(**pair_with_margin(1.0), beta=0.1, label_smoothing=eps)


# ----------------------------------------------------------------------------- SimPO


def test_simpo_hand_values() -> None:
    """beta = 2, gamma = 0.5.
    Pair 1: m_c = -4/4 = -1, m_r = -5/4 = -1.25: 2 * 0.25 - 0.5 = 0 -> ln 2 = 0.693147.
    Pair 2: m_c = -1, m_r = -6/3 = -2: 2 * 1 - 0.5 = 1.5 -> log(1 + e^-1.5) = 0.201413.
    Rewards beta * m: chosen -2, -2; rejected -2.5, -4."""
    out = simpo_loss(
        t(-4.0, -4.0),
        t(-5.0, -6.0),
        torch.tensor([4, 4]),
        torch.tensor([4, 3]),
        beta=2.0,
        gamma=0.5,
    )
    assert_close(out.loss, t(0.693147, 0.201413), **TOL)
    assert_close(out.metrics["grad_weight"], t(0.5, 0.182426), **TOL)
    assert_close(out.chosen_rewards, t(-2.0, -2.0), **TOL)
    assert_close(out.rejected_rewards, t(-2.5, -4.0), **TOL)


# ----------------------------------------------------------------------------- RPO


def test_rpo_hand_value() -> None:
    """pi_c = -8, ref_c = -18, pi_r = ref_r = -20: h = 10, beta = 0.1 -> DPO 0.313262.
    nll = -(-8) / 4 = 2; alpha = 1: 2.313262; alpha = 0.5: 1.313262."""
    args = (t(-8.0), t(-20.0), t(-18.0), t(-20.0), torch.tensor([4]))
    out = rpo_loss(*args, beta=0.1)
    assert_close(out.loss, t(2.313262), **TOL)
    assert_close(out.metrics["nll"], t(2.0), **TOL)
    assert_close(out.metrics["grad_weight"], t(0.268941), **TOL)
    assert_close(rpo_loss(*args, beta=0.1, alpha=0.5).loss, t(1.313262), **TOL)


# ----------------------------------------------------------------------------- rft


def test_rft_is_the_per_token_nll_of_desirable_examples_only() -> None:
    """Summed log-probs -6 over 3 tokens and -2 over 4 tokens: NLL per token 2 and 0.5.

    The desirable example's loss is its NLL, 2; the undesirable one's is 0. Rewards are the
    per-token mean log-probs, -2 (desirable) and -0.5 (undesirable).
    """
    logps = torch.tensor([-6.0, -2.0], requires_grad=True)
    out = rft_loss(logps, torch.tensor([3, 4]), torch.tensor([True, False]))
    assert_close(out.loss, t(2.0, 0.0), **TOL)
    assert_close(out.chosen_rewards, t(-2.0), **TOL)
    assert_close(out.rejected_rewards, t(-0.5), **TOL)
    assert_close(out.metrics["nll"], t(2.0, 0.5), **TOL)
    out.loss.sum().backward()
    assert_close(logps.grad, t(-1 / 3, 0.0), **TOL)  # d(-l/3)/dl; nothing reaches the undesirable one


# ----------------------------------------------------------------------------- gradient weights

# grad_weight is the loss's own per-pair gradient scale. Read off autograd through the rejected
# log-prob (which enters the margin with coefficient -1 and nothing else, so RPO's NLL of the
# chosen answer stays out): d loss / d policy_rejected_logps = factor * grad_weight, where factor is
# beta for the DPO family (-d loss / d(beta * h)), 1 / rejected_ntokens for IPO with
# length-normalised h' (|d loss / d h'|, up to the sign of h' - 1/(2 tau)), and beta / ntokens for
# SimPO (its margin is beta times per-token means).
# The later losses: beta for EXO, DiscoPOP and CPO (functions of beta times a margin), beta / n for
# length-normalised DPO, 1 for SLiC's hinge on raw log-probs, and for AlphaPO beta / n times
# d r / d m = exp(-alpha m) at the rejected answer's mean log-prob m.
GRAD_FACTORS = {
    "dpo": lambda beta, x: beta,
    "robust": lambda beta, x: beta,
    "hinge": lambda beta, x: beta,
    "rpo": lambda beta, x: beta,
    "ipo": lambda beta, x: 1 / x["rejected_ntokens"].float(),
    "simpo": lambda beta, x: beta / x["rejected_ntokens"].float(),
    "exo_pair": lambda beta, x: beta,
    "discopop": lambda beta, x: beta,
    "cpo": lambda beta, x: beta,
    "sigmoid_norm": lambda beta, x: beta / x["rejected_ntokens"].float(),
    "slic": lambda beta, x: 1.0,
    "reward_gap_bwd_kl": lambda beta, x: beta,
    "reward_scaled": lambda beta, x: beta,
    "alphapo": lambda beta, x: (
        beta
        / x["rejected_ntokens"].float()
        * torch.exp(-0.25 * x["policy_rejected_logps"].detach() / x["rejected_ntokens"].float())
    ),
}


def test_every_loss_that_logs_a_gradient_weight_is_checked_against_autograd() -> None:
    assert {name for name, spec in LOSSES.items() if spec.has_grad_weight} == set(GRAD_FACTORS)


@pytest.mark.parametrize("name", sorted(GRAD_FACTORS))
@pytest.mark.parametrize("options", [{}, {"label_smoothing": 0.2}])
def test_the_logged_gradient_weight_is_the_loss_own_derivative(name: str, options: dict) -> None:
    spec = get_loss(name)
    if options and "label_smoothing" not in loss_hyperparameters(spec):
        pytest.skip("no label smoothing in this loss")
    assert spec.has_grad_weight
    beta = 0.7
    tensors = random_inputs(16, seed=3)
    rejected = tensors["policy_rejected_logps"]
    beta_option = {"beta": beta} if "beta" in loss_hyperparameters(spec) else {}
    out = spec.fn(**{k: tensors[k] for k in loss_inputs(spec)}, **beta_option, **options)
    (gradient,) = torch.autograd.grad(out.loss.sum(), rejected)
    factor = GRAD_FACTORS[name](beta, tensors)
    expected = gradient / factor
    if name == "ipo":
        expected = expected.abs()
    assert_close(out.metrics["grad_weight"], expected, rtol=1e-5, atol=1e-6)


def test_dpo_gradient_weight_with_label_smoothing_goes_negative_past_the_smoothed_optimum() -> None:
    """sigma(-beta h) - eps: at beta h = 10, sigma(-10) = 4.54e-5, minus 0.1 -> -0.099955."""
    out = dpo_loss(**pair_with_margin(100.0), beta=0.1, label_smoothing=0.1)
    assert_close(out.metrics["grad_weight"], t(-0.099955), **TOL)


# ----------------------------------------------------------------------------- all losses


def random_inputs(batch: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Every tensor any registered loss may ask for, shape (batch,), plausible values."""
    g = torch.Generator().manual_seed(seed)
    chosen_ntokens = torch.randint(1, 50, (batch,), generator=g)
    rejected_ntokens = torch.randint(1, 50, (batch,), generator=g)

    def logps(ntokens: torch.Tensor) -> torch.Tensor:
        return -torch.rand(batch, generator=g) * 3 * ntokens

    policy_chosen_logps = logps(chosen_ntokens).requires_grad_()
    policy_logps = logps(chosen_ntokens).requires_grad_()
    return {
        "policy_chosen_logps": policy_chosen_logps,
        "policy_rejected_logps": logps(rejected_ntokens).requires_grad_(),
        "ref_chosen_logps": logps(chosen_ntokens),
        "ref_rejected_logps": logps(rejected_ntokens),
        "chosen_ntokens": chosen_ntokens,
        "rejected_ntokens": rejected_ntokens,
        "chosen_nll": -policy_chosen_logps / chosen_ntokens,
        "policy_logps": policy_logps,
        "ntokens": chosen_ntokens,
        "ref_logps": logps(chosen_ntokens),
        "desirable": torch.rand(batch, generator=g) > 0.5,
        "kl_baseline": torch.tensor(0.2),
        "reward_shift": torch.tensor(0.3),
        "chosen_scores": torch.rand(batch, generator=g) * 4,
        "rejected_scores": torch.rand(batch, generator=g) * 4,
    }


def call_loss(spec, tensors: dict[str, torch.Tensor], beta: float) -> LossOutput:
    """The loss on its inputs, with beta where it takes one (rft takes none)."""
    beta_option = {"beta": beta} if "beta" in loss_hyperparameters(spec) else {}
    return spec.fn(**{k: tensors[k] for k in loss_inputs(spec)}, **beta_option)


YARDSTICK_ONLY = {("sft", "policy_rejected_logps")}


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_shape_finite_gradients_and_detached_outputs(name: str) -> None:
    spec = get_loss(name)
    batch = 6
    tensors = random_inputs(batch)
    out = call_loss(spec, tensors, beta=0.1)

    assert isinstance(out, LossOutput)
    assert out.loss.shape == (batch,)
    assert torch.isfinite(out.loss).all()
    if spec.paired:
        assert out.chosen_rewards.shape == out.rejected_rewards.shape == (batch,)
    else:
        assert out.chosen_rewards.numel() + out.rejected_rewards.numel() == batch
    assert ("grad_weight" in out.metrics) == spec.has_grad_weight
    assert spec.needs_reference == any(k.startswith("ref_") for k in loss_inputs(spec))

    # Rewards and metrics are detached; the loss reaches every policy input.
    for tensor in (out.chosen_rewards, out.rejected_rewards, *out.metrics.values()):
        assert not tensor.requires_grad
        assert torch.isfinite(tensor).all()
    out.loss.mean().backward()
    # sft scores the rejected answers for its yardsticks only.
    policy_inputs = [
        k for k in loss_inputs(spec) if k.startswith("policy_") and (name, k) not in YARDSTICK_ONLY
    ]
    assert policy_inputs
    for k in policy_inputs:
        assert tensors[k].grad is not None and torch.isfinite(tensors[k].grad).all()
        assert tensors[k].grad.abs().sum() > 0


@pytest.mark.parametrize("name", sorted(n for n, s in LOSSES.items() if "beta" in loss_hyperparameters(s)))
@pytest.mark.parametrize("beta", [0.0, -0.1])
def test_every_loss_with_a_beta_rejects_non_positive_beta(name: str, beta: float) -> None:
    spec = get_loss(name)
    tensors = random_inputs(2)
    with pytest.raises(ValueError, match="beta"):
        call_loss(spec, tensors, beta=beta)


# ----------------------------------------------------------------------------- registry


TRL_DPO_LOSS_TYPES = {"hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
                      "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm"}  # fmt: skip
OURS = {"dpo", "kto", "orpo", "rft", "rpo", "simpo", "cpo", "slic", "alphapo", "mix", "bco"}
REWARD_AWARE = {"reward_gap_sq", "reward_gap_fwd_kl", "reward_gap_bwd_kl", "reward_scaled"}


def test_registry_names_and_flags() -> None:
    assert set(LOSSES) == TRL_DPO_LOSS_TYPES | OURS | REWARD_AWARE
    assert all(spec.name == name for name, spec in LOSSES.items())
    assert get_loss("sigmoid") is get_loss("dpo") and get_loss("dpo_norm") is get_loss("sigmoid_norm")
    reference_free = {"orpo", "rft", "simpo", "sft", "cpo", "slic", "alphapo"}
    assert {n for n, s in LOSSES.items() if not s.needs_reference} == reference_free
    assert {n for n, s in LOSSES.items() if not s.paired} == {"kto", "rft", "bco"}
    assert {n for n, s in LOSSES.items() if s.positives_only} == {"rft"}
    assert get_loss("dpo").fn is dpo_loss


def test_get_loss_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError) as excinfo:
        get_loss("dop")
    assert str(excinfo.value) == f"unknown loss 'dop'; valid losses: {', '.join(sorted(LOSSES))}"


def test_loss_inputs_follow_signatures() -> None:
    four = ("policy_chosen_logps", "policy_rejected_logps", "ref_chosen_logps", "ref_rejected_logps")
    assert loss_inputs(get_loss("dpo")) == four
    assert loss_inputs(get_loss("ipo")) == (*four, "chosen_ntokens", "rejected_ntokens")
    assert loss_inputs(get_loss("rpo")) == (*four, "chosen_ntokens")
    assert loss_inputs(get_loss("kto")) == ("policy_logps", "ref_logps", "desirable", "kl_baseline")
    assert loss_inputs(get_loss("rft")) == ("policy_logps", "ntokens", "desirable")
    assert loss_inputs(get_loss("orpo")) == (
        "policy_chosen_logps",
        "policy_rejected_logps",
        "chosen_ntokens",
        "rejected_ntokens",
        "chosen_nll",
    )
    assert loss_inputs(get_loss("simpo")) == (
        "policy_chosen_logps",
        "policy_rejected_logps",
        "chosen_ntokens",
        "rejected_ntokens",
    )


def test_loss_hyperparameters_follow_signatures() -> None:
    empty = inspect.Parameter.empty
    f = {"divergence": "reverse_kl", "divergence_alpha": 0.5}  # f-DPO's options
    expected = {
        "dpo": {"beta": empty, "label_smoothing": 0.0, **f},
        "ipo": {"beta": empty, "length_normalize": True, **f},
        "kto": {"beta": empty, "desirable_weight": 1.0, "undesirable_weight": 1.0},
        "orpo": {"beta": empty},
        "hinge": {"beta": empty, **f},
        "robust": {"beta": empty, "label_smoothing": 0.1, **f},
        "simpo": {"beta": empty, "gamma": 0.5},
        "rpo": {"beta": empty, "alpha": 1.0},
        "rft": {},
        "exo_pair": {"beta": empty, "label_smoothing": 1e-3, **f},
        "discopop": {"beta": empty, "tau": 0.05, **f},
        "sigmoid_norm": {"beta": empty, **f},
        "aot": {"beta": empty, "label_smoothing": 0.0},
        "aot_unpaired": {"beta": empty, "label_smoothing": 0.0},
        **{name: {"beta": empty} for name in ("nca_pair", "bco_pair", "sppo_hard", "apo_zero", "apo_down")},
        "sft": {},
        "bco": {"beta": empty},
        "cpo": {"beta": empty, "nll_weight": 1.0, "label_smoothing": 0.0},
        "slic": {"margin": 1.0, "nll_weight": 0.1},
        "alphapo": {"beta": empty, "alpha": 0.25, "gamma": 0.5},
        **{name: {"beta": empty, "reward_scale": 1.0} for name in REWARD_AWARE - {"reward_scaled"}},
        "reward_scaled": {"beta": empty},
        "mix": {
            "beta": empty,
            "terms": ("sigmoid", "bco_pair", "sft"),
            "weights": (0.8, 0.2, 1.0),
            "options": None,
        },
    }
    assert {name: loss_hyperparameters(spec) for name, spec in LOSSES.items()} == expected
