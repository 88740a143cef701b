"""The result block speaks each loss's own words: a pair ranking or a side of the reference point,
and the unit of the loss's reward."""

from __future__ import annotations

from dpo_exp.losses import get_loss
from dpo_exp.training.result import run_figures


def test_pairwise_losses_rank_pairs_in_their_own_reward_unit():
    dpo, simpo, ipo = (run_figures(get_loss(name)) for name in ("dpo", "simpo", "ipo"))
    assert dpo["val/rewards/accuracy"] == "validation pairs ranked right by the reward (fraction)"
    assert dpo["val/rewards/margin"] == "reward margin, chosen - rejected (beta x log-ratio)"
    assert simpo["val/rewards/margin"].endswith("(beta x per-token log-prob)")  # no reference
    assert ipo["val/rewards/margin"].endswith("(beta x per-token log-ratio)")


def test_unpaired_losses_do_not_speak_of_pairs():
    for name in ("kto", "bco"):
        figures = run_figures(get_loss(name))
        assert "pairs" not in figures["val/rewards/accuracy"]
        assert figures["val/rewards/accuracy"].startswith("validation examples on their label's side")
        assert figures["val/rewards/margin"].startswith("reward, desirable - undesirable")
    assert run_figures(get_loss("rft"))["val/rewards/margin"].endswith("(per-token log-prob)")
