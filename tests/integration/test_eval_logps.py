"""β-free re-scoring: the saved validation log-probs reproduce what the run logged."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch

from dpo_exp.cli import run
from dpo_exp.training.build import loss_options
from dpo_exp.training.eval_logps import load_eval_logps, rescore, rescore_refusal, saved_steps
from tests.helpers import compose_config


def logged_val(run_dir: Path, step: int, name: str) -> float:
    with open(run_dir / "metrics.csv") as stream:
        rows = [row for row in csv.DictReader(stream) if row.get(name) and int(row["step"]) == step - 1]
    (row,) = rows
    return float(row[name])


@pytest.mark.slow
@pytest.mark.parametrize(("loss", "beta"), [("dpo", 0.3), ("ipo", 0.5)])
def test_rescoring_at_the_runs_own_beta_reproduces_the_logged_val_loss(tmp_path: Path, loss, beta):
    cfg = compose_config([f"loss={loss}", f"beta={beta}", "save_eval_logps=true"])
    summary = run(cfg, tmp_path)
    assert saved_steps(tmp_path) == [0, 2, 4]  # before training, then val_check_interval=2, max_steps=4
    for step in (2, 4):
        tensors = load_eval_logps(tmp_path, step)
        assert tensors["policy_chosen_logps"].shape == (16,)  # data.val_size=16 pairs
        scores = rescore(tensors, loss=loss, beta=beta, loss_options=loss_options(cfg.loss))
        assert scores["loss"] == pytest.approx(logged_val(tmp_path, step, "val/loss"), rel=1e-5)
    assert scores["loss"] == pytest.approx(summary["metrics"]["val/loss"], rel=1e-5)
    assert scores["rewards/accuracy"] == pytest.approx(summary["metrics"]["val/rewards/accuracy"], abs=1e-6)


def test_rescoring_follows_the_dpo_formula_at_any_beta():
    """h = (-1 - -2) - (-3 - -2) = 2; DPO at β = 0.5: -log σ(1) = 0.313262; margin β·h = 1."""
    tensors = {
        "policy_chosen_logps": torch.tensor([-1.0, -1.0]),
        "policy_rejected_logps": torch.tensor([-3.0, -3.0]),
        "ref_chosen_logps": torch.tensor([-2.0, -2.0]),
        "ref_rejected_logps": torch.tensor([-2.0, -2.0]),
    }
    scores = rescore(tensors, loss="dpo", beta=0.5)
    assert scores["loss"] == pytest.approx(-math.log(1 / (1 + math.exp(-1))), abs=1e-9)
    assert scores["rewards/margin"] == pytest.approx(1.0)
    assert scores["rewards/accuracy"] == 1.0
    with pytest.raises(ValueError, match="needs chosen_ntokens"):
        rescore(tensors, loss="ipo", beta=0.5)


def test_runs_without_pairs_or_without_a_reference_are_refused_with_the_reason():
    unpaired = {  # what a kto or rft run saves: labelled single examples
        "policy_logps": torch.tensor([-1.0, -2.0]),
        "ntokens": torch.tensor([2, 3]),
        "desirable": torch.tensor([True, False]),
    }
    no_pairs = "the run trained on unpaired examples: its saved log-probs hold no pairs"
    assert rescore_refusal(unpaired, "dpo") == rescore_refusal(unpaired, "kto") == no_pairs
    with pytest.raises(ValueError, match=no_pairs):
        rescore(unpaired, loss="dpo", beta=0.1)
    # What an orpo run saves: pairs, no reference. m = mean log-prob: -1/2 and -3/3 → h = 0.5.
    reference_free = {
        "policy_chosen_logps": torch.tensor([-1.0]),
        "policy_rejected_logps": torch.tensor([-3.0]),
        "chosen_ntokens": torch.tensor([2]),
        "rejected_ntokens": torch.tensor([3]),
        "chosen_nll": torch.tensor([0.5]),
    }
    assert rescore_refusal(reference_free, "dpo") == (
        "dpo needs reference log-probs; the run trained without a reference and saved none"
    )
    assert (
        rescore_refusal(reference_free, "kto")
        == "kto trains on unpaired examples; re-scoring needs a paired loss"
    )
    assert rescore_refusal(reference_free, "simpo") is None
    # SimPO at β = 2, γ = 0: -log σ(2 · 0.5) = 0.313262, margin 1.
    scores = rescore(reference_free, loss="simpo", beta=2.0, loss_options={"gamma": 0.0})
    assert scores["loss"] == pytest.approx(0.313262, abs=1e-6) and scores["rewards/margin"] == pytest.approx(
        1.0
    )
