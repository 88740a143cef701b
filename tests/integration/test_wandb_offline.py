"""`logger=wandb` works offline: a run writes a W&B offline run folder beside its CSV metrics."""

from __future__ import annotations

from pathlib import Path

import pytest

from dpo_exp.cli import run
from dpo_exp.training.build import flatten
from tests.helpers import compose_config


@pytest.mark.slow
def test_a_wandb_run_writes_an_offline_run_folder(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    cfg = compose_config(["logger=wandb", "logger.tags=[sweep-test]", "trainer.max_steps=2"])
    run(cfg, tmp_path)
    (offline_run,) = (tmp_path / "wandb").glob("offline-run-*")
    assert list(offline_run.glob("*.wandb")), "no W&B run file"
    assert (tmp_path / "metrics.csv").exists()


def test_the_config_is_flattened_so_every_override_is_a_column():
    assert flatten(
        {"beta": 0.1, "loss": {"name": "dpo", "label_smoothing": 0.0}, "optim": {"betas": [0.9]}}
    ) == [
        ("beta", 0.1),
        ("loss.name", "dpo"),
        ("loss.label_smoothing", 0.0),
        ("optim.betas", [0.9]),
    ]
