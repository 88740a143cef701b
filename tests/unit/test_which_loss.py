"""bench/which_loss.py: intervals over seeds, ranks only where intervals separate, the tuned point."""

from __future__ import annotations

import importlib.util

import pytest

from tests.conftest import PROJECT_ROOT

spec = importlib.util.spec_from_file_location("which_loss", PROJECT_ROOT / "bench" / "which_loss.py")
which_loss = importlib.util.module_from_spec(spec)
spec.loader.exec_module(which_loss)


def test_the_interval_is_students_t_over_seeds():
    """Gains 0.1, 0.2, 0.3: mean 0.2, sd 0.1, t(0.975, 2) = 4.303 -> half-width 0.2484."""
    mean, low, high = which_loss.interval([0.1, 0.2, 0.3])
    assert mean == pytest.approx(0.2)
    assert (low, high) == pytest.approx((0.2 - 0.24843, 0.2 + 0.24843), abs=1e-4)
    assert which_loss.interval([0.5]) == (0.5, 0.5, 0.5)


def test_losses_are_ranked_by_paired_differences_over_seeds():
    """b trails a by 0.10 on every seed (paired: separated) though the seeds' spread is large; c
    trails a by 0.10 on average but not on every seed (its paired interval holds 0)."""
    gains = {"a": [0.2, 0.4, 0.6], "b": [0.1, 0.3, 0.5], "c": [0.3, 0.1, 0.5]}
    assert which_loss.ranks(gains) == {"a": 1, "b": 2, "c": 1}


def test_the_tuned_point_has_the_largest_mean_gain_a_tie_going_to_the_better_worst_seed():
    assert which_loss.choose({"beta=1": [0.2, 0.2], "beta=2": [0.4, 0.1], "beta=4": [0.1, 0.1]}) == "beta=2"
    assert which_loss.choose({"beta=1": [0.3, 0.1], "beta=2": [0.25, 0.15]}) == "beta=2"


def test_every_loss_has_a_three_point_grid():
    from dpo_exp.losses import LOSSES

    assert set(which_loss.GRIDS) == set(LOSSES)
    assert all(len(values) == 3 for _, values in which_loss.GRIDS.values())


def test_the_table_ranks_and_shows_each_seed():
    runs = [{"gain": g, "KL": 0.5, "Δlogp chosen": 0.1, "Δlogp rejected": -1.0} for g in (0.2, 0.3)]
    low = [{"gain": g, "KL": 0.2, "Δlogp chosen": 0.0, "Δlogp rejected": -0.5} for g in (-0.01, 0.01)]
    lines = which_loss.table(
        {"dpo": runs, "sft": low}, {"dpo": "beta=1", "sft": "optim.lr=2e-4"}
    ).splitlines()
    assert lines[2].startswith("| 1 | dpo | beta=1 | +0.250 [")
    assert lines[2].endswith("| 0.50 | +0.10 | -1.00 | +0.200, +0.300 |")
    assert lines[3].startswith("| 1 | sft |")  # two seeds: t(0.975, 1) = 12.7, the intervals overlap
