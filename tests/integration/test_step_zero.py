"""The step-0 invariant, checked in every run that starts from its reference: log-ratios 0 and the
loss at its own value there; a mismatch stops the run on its first step, naming what differs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from dpo_exp.cli import run
from dpo_exp.training import ref_cache
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
        "chosen_ntokens": torch.tensor([4, 5]),
        "rejected_ntokens": torch.tensor([4, 4]),
    }
    losses = (torch.tensor([0.7, 0.6]), torch.tensor([0.693, 0.693]))
    figures = step_zero_figures(tensors, *losses, torch.float32)
    # In float32 the floor holds: 1e-3 + 1e-4 * 20.5 = 0.00305 (3 eps * sqrt(5) * 4.1 is 3e-6).
    assert figures == pytest.approx(
        {"max_abs_logratio": 0.5, "worst_abs_logratio": 0.5, "allowed": 0.00305, "worst_ref_logps": -20.5,
         "worst_ntokens": 5, "dtype": "float32", "loss": 0.65, "loss_at_zero": 0.693}
    )  # fmt: skip
    problem = step_zero_problem(figures)
    assert problem.startswith("at step 0 the policy starts as its reference, yet a sequence's policy")
    assert "differ by 0.5 (allowed 0.00305 for a log-prob of -20.5 over 5 tokens in float32)" in problem
    # In bfloat16: 3 * 2^-7 * sqrt(5) * (20.5 / 5) = 0.2149; 0.5 is still refused, a tenth of it passes.
    figures = step_zero_figures(tensors, *losses, torch.bfloat16)
    assert figures["allowed"] == pytest.approx(0.2149, abs=1e-4)
    assert step_zero_problem(figures) is not None
    assert step_zero_problem({**figures, "worst_abs_logratio": 0.05}) is None


def bf16_step_zero(policy: float, reference: float, ntokens: int) -> dict:
    """The step-0 figures of one pair whose chosen sequence differs, computed in bfloat16."""
    tensors = {
        "policy_chosen_logps": torch.tensor([policy]),
        "ref_chosen_logps": torch.tensor([reference]),
        "policy_rejected_logps": torch.tensor([-300.0]),
        "ref_rejected_logps": torch.tensor([-300.0]),
        "chosen_ntokens": torch.tensor([ntokens]),
        "rejected_ntokens": torch.tensor([60]),
    }
    return step_zero_figures(tensors, torch.tensor([0.7]), torch.tensor([math.log(2)]), torch.bfloat16)


def test_a_reference_rounded_to_bf16_is_refused_where_bf16_compute_passes():
    # A reference of -962 over 200 tokens stored in bf16 reads -960 (ulps are 4 in [512, 1024), a
    # tie goes to even). Allowed: 3 * 2^-7 * sqrt(200) * (960 / 200) = 1.591, under the 2 it moved.
    rounded = bf16_step_zero(-962.0, float(torch.tensor(-962.0).bfloat16()), 200)
    assert rounded["allowed"] == pytest.approx(1.591, abs=1e-3) and rounded["worst_abs_logratio"] == 2.0
    problem = step_zero_problem(rounded)
    assert "differ by 2 (allowed 1.59 for a log-prob of -960 over 200 tokens in bfloat16)" in problem
    # A correct run computing in bf16 against an fp32 reference: the largest difference measured on
    # the tiny Llama at hidden size 256, 0.638 at -725 over 130 tokens (allowed 1.49), passes.
    assert step_zero_problem(bf16_step_zero(-725.059 + 0.638, -725.059, 130)) is None


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


def test_a_bf16_model_against_its_cached_reference_is_held_to_bf16_rounding(tmp_path: Path, monkeypatch):
    # The cache's pass and the training step may run other kernels (a GPU picks them per batch
    # shape): here the reference pass takes SDPA's math kernel and the step its flash kernel, which
    # round differently in bf16. The run, correct, goes on; its figures name the dtype.
    scored = ref_cache.score_batch

    def on_the_math_kernel(*args, **kwargs):
        with sdpa_kernel(SDPBackend.MATH):
            return scored(*args, **kwargs)

    monkeypatch.setattr(ref_cache, "score_batch", on_the_math_kernel)
    cached = ["model.dtype=bfloat16", "reference.cache=true", f"reference.cache_dir={tmp_path / 'cache'}"]
    figures = run(compose_config([*FAST, *TWO_STEPS, *cached], fast=False), tmp_path / "run")["step_zero"]
    assert figures["dtype"] == "bfloat16"
    assert 1e-3 + 1e-4 * abs(figures["worst_ref_logps"]) < figures["worst_abs_logratio"] < figures["allowed"]


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
