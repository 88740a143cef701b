"""A NaN never reaches the weights: the run stops naming the step and batch, or skips the step."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch.plugins.precision import MixedPrecision
from lightning.pytorch.trainer.connectors.accelerator_connector import _AcceleratorConnector

from dpo_exp.cli import run
from dpo_exp.training.guards import NonFiniteError
from dpo_exp.training.module import PreferenceModule
from tests.helpers import compose_config


@pytest.fixture
def nan_on_step_two(monkeypatch):
    """Make the loss of global step 2 NaN, as an overflow would."""
    original = PreferenceModule.training_step

    def training_step(self, batch, batch_idx):
        loss = original(self, batch, batch_idx)
        return loss * torch.tensor(float("nan")) if self.global_step == 2 else loss

    monkeypatch.setattr(PreferenceModule, "training_step", training_step)


def test_stop_names_the_step_and_the_batch(tmp_path: Path, nan_on_step_two):
    with pytest.raises(NonFiniteError, match=r"step 2, batch of examples \[\d+"):
        run(compose_config([]), tmp_path)
    assert not (tmp_path / "summary.json").exists()
    assert "non-finite" in (tmp_path / "failed.txt").read_text()


def test_skip_leaves_the_weights_finite_and_counts_the_step(tmp_path: Path, nan_on_step_two):
    summary = run(compose_config(["nonfinite=skip"]), tmp_path)
    assert summary["skipped_steps"] == 1 and summary["global_step"] == 4
    assert all(torch.isfinite(torch.tensor(v)) for k, v in summary["metrics"].items() if k.startswith("val/"))


@pytest.fixture
def fp16_scaler_overflowing_once(monkeypatch):
    """`16-mixed` as on a GPU, on the CPU (where Lightning would take bf16-mixed instead): float16
    autocast and a GradScaler, whose first scale, 2^40, overflows the float16 gradients of step 0;
    its one backoff brings it to 2^10."""

    def precision(self):
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**40, backoff_factor=2.0**-30)
        return MixedPrecision("16-mixed", "cpu", scaler=scaler)

    monkeypatch.setattr(_AcceleratorConnector, "_check_and_init_precision", precision)


def test_a_loss_scaler_overflow_is_the_scalers_skip_not_a_stop(tmp_path: Path, fp16_scaler_overflowing_once):
    summary = run(compose_config(["trainer.precision=16-mixed"]), tmp_path)
    assert summary["scaler_skipped_steps"] == 1 and summary["skipped_steps"] == 0
    assert summary["global_step"] == 4 and summary["metrics"]["train/scaler_skipped_steps"] == 1
    assert all(torch.isfinite(torch.tensor(v)) for k, v in summary["metrics"].items() if k.startswith("val/"))


@pytest.mark.slow  # the scaler's overflow case runs in the fast tier
def test_under_a_loss_scaler_a_nan_loss_still_stops(
    tmp_path: Path, fp16_scaler_overflowing_once, nan_on_step_two
):
    with pytest.raises(NonFiniteError, match=r"step 2, batch of examples \[\d+"):
        run(compose_config(["trainer.precision=16-mixed"]), tmp_path)


@pytest.mark.slow  # the scaler's overflow case runs in the fast tier
def test_under_a_loss_scaler_a_nan_weight_stops_the_run(
    tmp_path: Path, fp16_scaler_overflowing_once, monkeypatch
):
    original = PreferenceModule.training_step

    def training_step(self, batch, batch_idx):  # a weight turned NaN by something else than a gradient
        if self.global_step == 2:
            with torch.no_grad():
                next(self.policy.parameters())[0, 0] = float("nan")
        return original(self, batch, batch_idx)

    monkeypatch.setattr(PreferenceModule, "training_step", training_step)
    with pytest.raises(NonFiniteError, match=r"non-finite weights after step \d, batch of examples \[\d+"):
        run(compose_config(["trainer.precision=16-mixed", "nonfinite=skip"]), tmp_path)
