"""The step-0 invariant, checked in every run that starts from its reference: log-ratios 0 and the
loss at its own value there; a mismatch stops the run on its first step, naming what differs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from dpo_exp.cli import run
from dpo_exp.training.invariants import StepZeroMismatch, step_zero_figures, step_zero_problem
from dpo_exp.training.module import PreferenceModule
from tests.helpers import FAST, FAST_DATA, FAST_TRAINER, SINGLE_RUN, compose_config

TWO_STEPS = ["trainer.max_steps=2", "trainer.val_check_interval=2"]


def test_figures_and_problem_by_hand():
    tensors = {
        "policy_chosen_logps": torch.tensor([-10.0, -20.0]),
        "ref_chosen_logps": torch.tensor([-10.0, -20.5]),  # off by 0.5 on the second pair
        "policy_rejected_logps": torch.tensor([-12.0, -8.0]),
        "ref_rejected_logps": torch.tensor([-12.0, -8.0]),
    }
    figures = step_zero_figures(tensors, torch.tensor([0.7, 0.6]), torch.tensor([0.693, 0.693]))
    assert figures == pytest.approx(
        {"max_abs_logratio": 0.5, "max_abs_ref_logps": 20.5, "loss": 0.65, "loss_at_zero": 0.693}
    )
    problem = step_zero_problem(figures, "32-true")  # allowed 1e-3 + 1e-4 * 20.5 = 0.00305
    assert problem.startswith("at step 0 the policy starts as its reference, yet a sequence's policy")
    assert "differ by 0.5 (allowed 0.0031)" in problem
    # Half precision allows 5e-2 + 1e-2 * 20.5 = 0.255: still refused; a tenth of it passes.
    assert step_zero_problem(figures, "bf16-mixed") is not None
    assert step_zero_problem({**figures, "max_abs_logratio": 0.05}, "bf16-mixed") is None


@pytest.mark.parametrize(
    ("loss", "expected"),
    [
        ("dpo", math.log(2)),  # -log σ(0)
        ("ipo", (1 / (2 * 0.5)) ** 2),  # (0 - 1/(2τ))², τ = beta = 0.5
        ("hinge", 1.0),  # max(0, 1 - 0)
        ("rpo", None),  # DPO's ln 2 plus alpha · the chosen NLL, which depends on the model
        ("kto", None),  # w/2 for each example's label weight
    ],
)
def test_a_run_from_its_reference_records_the_invariant(tmp_path: Path, loss, expected):
    summary = run(compose_config([*FAST, *TWO_STEPS, f"loss={loss}", "beta=0.5"], fast=False), tmp_path)
    figures = summary["step_zero"]
    assert figures["max_abs_logratio"] < 1e-4
    assert figures["loss"] == pytest.approx(figures["loss_at_zero"], abs=1e-5)
    if expected is not None:
        assert figures["loss_at_zero"] == pytest.approx(expected, rel=1e-5)


def test_reference_free_losses_and_another_reference_are_not_checked(tmp_path: Path, tiny_model_dir):
    assert (
        run(compose_config([*FAST, *TWO_STEPS, "loss=orpo"], fast=False), tmp_path / "a")["step_zero"] is None
    )
    other = ["model=hf", f"model.path={tiny_model_dir}", f"model.ref_path={tiny_model_dir}"]
    overrides = [*SINGLE_RUN, *FAST_DATA, *FAST_TRAINER, *TWO_STEPS, *other]
    summary = run(compose_config(overrides, fast=False), tmp_path / "b")
    assert summary["step_zero"] is None


def test_a_reference_scored_on_other_rows_stops_the_first_step(tmp_path: Path, monkeypatch):
    # A stand-in for a masking or cache bug: the reference's log-probs of the batch's rows, rolled.
    scored = PreferenceModule.reference_logps
    monkeypatch.setattr(PreferenceModule, "reference_logps", lambda self, batch, prefix="": scored(
        self, batch, prefix).roll(1))  # fmt: skip
    with pytest.raises(StepZeroMismatch, match=r"at step 0 .* differ by [0-9.]+ \(allowed .*the loss is"):
        run(compose_config([*FAST, *TWO_STEPS], fast=False), tmp_path / "run")
    assert not (tmp_path / "run" / "summary.json").exists()
