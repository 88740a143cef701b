"""Golden values for every loss, hand checks of the losses added beside TRL's, and the mix.

The golden values are each loss on one fixed batch at beta 0.5: a change to any formula, reduction
or default fails here, whatever else it passes. The pairs are built so that the log-ratios are
round: pair 0 has r_c = 0.5, r_r = -0.2 (h = 0.7); pair 2 has r_c = 1, r_r = -1 (h = 2).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from dpo_exp.losses import LOSSES, get_loss, loss_hyperparameters, loss_inputs

BETA = 0.5


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def golden_inputs() -> dict[str, torch.Tensor]:
    policy_chosen, chosen_ntokens = t(-3.0, -7.5, -12.0, -4.2), torch.tensor([3, 5, 8, 4])
    return {
        "policy_chosen_logps": policy_chosen,
        "policy_rejected_logps": t(-4.0, -6.0, -15.0, -4.0),
        "ref_chosen_logps": t(-3.5, -7.0, -13.0, -4.5),
        "ref_rejected_logps": t(-3.8, -6.5, -14.0, -3.9),
        "chosen_ntokens": chosen_ntokens,
        "rejected_ntokens": torch.tensor([4, 4, 10, 3]),
        "chosen_nll": -policy_chosen / chosen_ntokens,
        "policy_logps": policy_chosen,
        "ref_logps": t(-3.5, -7.0, -13.0, -4.5),
        "ntokens": chosen_ntokens,
        "desirable": torch.tensor([True, False, True, False]),
        "kl_baseline": torch.tensor(0.2),
        "reward_shift": torch.tensor(0.1),
        "chosen_scores": t(1.0, 0.5, 3.0, 2.0),  # reward gaps 1, -0.5, 2, 0
        "rejected_scores": t(0.0, 1.0, 1.0, 2.0),
    }


GOLDEN = {
    "alphapo": [0.974077, 0.974077, 0.974077, 0.859609],
    "aot": [0.943249, 0.620957, 0.533382, 0.313262],
    "aot_unpaired": [0.575939, 0.575939, 0.554355, 0.575939],
    "apo_down": [0.975559, 1.060283, 0.891401, 0.987596],
    "apo_zero": [0.912844, 1.124353, 0.755081, 0.950073],
    "bco_pair": [1.220336, 1.651879, 0.948154, 1.289417],
    "cpo": [1.809077, 2.471871, 1.536413, 2.079397],
    "discopop": [0.704532, 0.974108, 0.367879, 0.814763],
    "dpo": [0.533382, 0.974077, 0.313262, 0.598139],
    "exo_pair": [2.178065, 3.637328, 1.27631, 2.422015],
    "hinge": [0.65, 1.5, 0.0, 0.8],
    "ipo": [0.613611, 1.500625, 0.600625, 0.795069],
    "kto": [0.46257, 0.413382, 0.401312, 0.512497],
    "mix": [2.005773, 2.444637, 1.77524, 2.071394],
    "nca_pair": [1.311107, 1.526879, 1.198154, 1.340665],
    "orpo": [1.346574, 1.846574, 1.846574, 1.304898],
    "rft": [1.0, 0.0, 1.5, 0.0],
    "robust": [0.489632, 1.036577, 0.188262, 0.573139],
    "rpo": [1.533382, 2.474077, 1.813262, 1.648139],
    "sft": [1.335, 1.335, 1.335, 1.335],
    "sigmoid_norm": [0.640447, 0.750978, 0.638478, 0.666431],
    "simpo": [0.974077, 0.974077, 0.974077, 0.888279],
    "slic": [0.1, 2.65, 0.15, 1.305],
    "sppo_hard": [0.89, 4.5, 0.0, 1.3],
    "reward_gap_sq": [0.4225, 0.0, 1.0, 0.04],
    "reward_gap_fwd_kl": [0.048578, 0.0, 0.082608, 0.004975],
    "reward_gap_bwd_kl": [0.045309, 0.0, 0.067131, 0.004992],
    "reward_scaled": [0.533382, 0.487038, 0.626523, 0.0],
    "bco": [0.620957, 0.533382, 0.513015, 0.71846],
}


def call(name: str, **options) -> torch.Tensor:
    spec, tensors = get_loss(name), golden_inputs()
    beta = {"beta": BETA} if "beta" in loss_hyperparameters(spec) else {}
    return spec.fn(**{k: tensors[k] for k in loss_inputs(spec)}, **beta, **options)


def test_every_loss_has_golden_values():
    assert set(GOLDEN) == set(LOSSES)


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_values(name: str):
    assert_close(call(name).loss, t(*GOLDEN[name]), rtol=1e-5, atol=1e-5)


def softplus(x: float) -> float:
    """-log sigmoid(-x)."""
    return math.log1p(math.exp(x))


# Hand values from each paper's formula, on pair 0 (r_c = 0.5, r_r = -0.2, h = 0.7) and pair 2
# (r_c = 1, r_r = -1, h = 2) of the golden batch, beta 0.5.
HAND = {
    ("dpo", 0): softplus(-0.35),  # -log sigma(beta h)
    ("sppo_hard", 0): (0.5 - 1) ** 2 + (-0.2 + 1) ** 2,  # targets +-1 / (2 beta)
    ("bco_pair", 2): 2 * softplus(-0.5),  # -log sigma(0.5) - log sigma(-(-0.5))
    ("nca_pair", 2): softplus(-0.5) + 0.5 * softplus(0.5) + 0.5 * softplus(-0.5),
    ("apo_zero", 2): 2 * (1 - 1 / (1 + math.exp(-0.5))),  # (1 - sigma(0.5)) + sigma(-0.5)
    ("apo_down", 2): 1 / (1 + math.exp(-0.5)) + 1 - 1 / (1 + math.exp(-1.0)),
    ("sft", 0): 26.7 / 20,  # (3 + 7.5 + 12 + 4.2) / (3 + 5 + 8 + 4)
    ("slic", 0): 0.0 + 0.1 * 1.0,  # gap 1 = margin, so only lambda * (3 / 3)
    ("cpo", 0): softplus(-0.5) + 26.7 / 20,  # beta (pi_c - pi_r) = 0.5, plus the batch NLL
    ("discopop", 2): math.exp(-1.0),  # z = 1: the blend is all exponential (sigma(1 / 0.05) = 1)
    ("sigmoid_norm", 0): softplus(-0.5 * (0.5 / 3 + 0.2 / 4)),
    ("alphapo", 0): softplus(0.5),  # equal per-token means -1: -log sigma(-gamma)
    ("reward_gap_sq", 0): (0.35 - 1.0) ** 2,  # (beta h - reward gap)^2
    ("reward_gap_sq", 1): 0.0,  # h = -1, gap -0.5: the implicit gap already matches the data's
    ("reward_scaled", 2): 2 * softplus(-1.0),  # |gap| * DPO's loss
    ("reward_scaled", 3): 0.0,  # equal rewards: the pair teaches nothing
    ("bco", 0): softplus(-(0.25 - 0.1)),  # desirable, u = 0.5 * 0.5: -log sigma(u - delta)
    ("bco", 1): softplus(-0.25 - 0.1),  # undesirable, u = 0.5 * -0.5: -log sigma(-(u - delta))
}


@pytest.mark.parametrize(("name", "pair"), sorted(HAND))
def test_hand_values(name: str, pair: int):
    assert call(name).loss[pair].item() == pytest.approx(HAND[(name, pair)], abs=1e-5)


def test_exo_pair_is_the_kl_to_the_smoothed_labels():
    """Pair 2: q = sigma(1); KL((q, 1 - q) || (1 - eps, eps)), eps = 1e-3."""
    q, eps = 1 / (1 + math.exp(-1.0)), 1e-3
    expected = q * math.log(q / (1 - eps)) + (1 - q) * math.log((1 - q) / eps)
    assert call("exo_pair").loss[2].item() == pytest.approx(expected, abs=1e-5)


def test_discopop_pushes_margins_down_at_the_reference():
    """At h = 0 the slope is 3/4 - (1 - ln 2) / (4 tau): negative at tau = 0.05."""
    zeros = torch.zeros(1)
    out = get_loss("discopop").fn(zeros - 1, zeros - 1, zeros - 1, zeros - 1, beta=0.5)
    assert out.metrics["grad_weight"].item() == pytest.approx(0.75 - (1 - math.log(2)) / 0.2, abs=1e-5)


def test_forward_kl_and_js_divergences_change_the_margin_as_their_f_prime():
    """Pair 2, r_c = 1, r_r = -1: forward KL gives (1 - e^-1) - (1 - e) = e - 1/e;
    JS gives logsigmoid(1) - logsigmoid(-1) = 1."""
    forward = call("dpo", divergence="forward_kl").loss[2].item()
    assert forward == pytest.approx(softplus(-BETA * (math.e - 1 / math.e)), abs=1e-5)
    js = call("dpo", divergence="js_divergence").loss[2].item()
    assert js == pytest.approx(softplus(-BETA * 1.0), abs=1e-5)


def test_alpha_divergence_at_alpha_one_is_reverse_kl():
    assert_close(call("dpo", divergence="alpha_divergence", divergence_alpha=1.0).loss, call("dpo").loss)


def test_the_reward_gap_kls_are_bernoulli_kls_between_the_win_probabilities():
    """Pair 2: the policy's win probability sigma(beta h) = sigma(1), the data's sigma(2)."""
    p, q = 1 / (1 + math.exp(-1.0)), 1 / (1 + math.exp(-2.0))
    forward = p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))
    backward = q * math.log(q / p) + (1 - q) * math.log((1 - q) / (1 - p))
    assert call("reward_gap_fwd_kl").loss[2].item() == pytest.approx(forward, abs=1e-6)
    assert call("reward_gap_bwd_kl").loss[2].item() == pytest.approx(backward, abs=1e-6)


def test_a_mix_is_the_weighted_sum_of_its_terms_and_logs_each():
    out = call(
        "mix", terms=["sigmoid", "ipo"], weights=[0.25, 2.0], options={"ipo": {"length_normalize": False}}
    )
    sigmoid, ipo = call("dpo").loss, call("ipo", length_normalize=False).loss
    assert_close(out.loss, 0.25 * sigmoid + 2.0 * ipo)
    assert_close(out.metrics["term/sigmoid"], sigmoid)
    assert_close(out.metrics["term/ipo"], ipo)


def test_a_mix_without_weights_weighs_each_term_one():
    out = call("mix", terms=["hinge", "sft"], weights=None)
    assert_close(out.loss, call("hinge").loss + call("sft").loss)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"terms": []}, "a mix needs terms"),
        ({"terms": ["dpo", "sigmoid"], "weights": [1, 1]}, None),  # two names, one loss: allowed
        ({"terms": ["dpo", "dpo"], "weights": [1, 1]}, "each term once"),
        ({"terms": ["kto"], "weights": [1]}, "kto is not one"),
        ({"terms": ["mix"], "weights": [1]}, "mix is not one"),
        ({"terms": ["dpo"], "weights": ["x"]}, "weights must be numbers"),
        ({"terms": ["reward_gap_sq"], "weights": [1]}, "takes the data's rewards"),
    ],
)
def test_a_mix_refuses_what_it_cannot_mean(options: dict, message: str | None):
    if message is None:
        call("mix", **options)
        return
    with pytest.raises(ValueError, match=message):
        call("mix", **options)
