"""A NaN never reaches the weights: the run stops naming the step and batch, or skips the step."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

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
