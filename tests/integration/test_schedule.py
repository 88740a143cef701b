"""Defaults for a model loaded from weights on a fixed dataset, a budget in epochs, and the
telemetry a short run's curves need (learning rate, gradient norm, clipping, validation at step 0)."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pytest

from dpo_exp.cli import run
from dpo_exp.config import ConfigError, validate_config
from dpo_exp.config.validate import learning_rate_warning
from dpo_exp.training.metrics_file import METRICS, read_metrics
from tests.conftest import PREFERENCES
from tests.helpers import FAST_DATA, FAST_MODEL, FAST_TRAINER, SINGLE_RUN, compose_config

PAIRS = ["data=pairs", f"data.train_path={PREFERENCES}/standard/train.jsonl.gz"]


def test_a_loaded_model_on_a_fixed_dataset_gets_dpo_defaults():
    cfg = compose_config(["model=qwen2", *PAIRS], fast=False)
    assert cfg.optim.lr == 1e-6 and cfg.optim.warmup_ratio == 0.1 and cfg.optim.warmup_steps is None
    assert cfg.trainer.val_check_interval is None and cfg.trainer.log_every_n_steps is None
    assert learning_rate_warning(cfg) is None
    assert compose_config(PAIRS, fast=False).optim.lr == 5e-4  # the tiny model, built from random weights


@pytest.mark.parametrize(("data", "lr", "val_every"), [("arithmetic", 4e-4, 300), ("gsm8k", 5e-4, 100)])
def test_the_built_in_experiment_keeps_its_own_preset(data, lr, val_every):
    cfg = compose_config([f"data={data}", "model=qwen2"], fast=False)
    assert (cfg.optim.lr, cfg.optim.warmup_steps) == (lr, 10)
    assert (cfg.trainer.val_check_interval, cfg.trainer.log_every_n_steps) == (val_every, 10)


def test_a_loaded_model_at_a_rate_far_outside_dpos_range_warns_once(tiny_model_dir, tmp_path, caplog):
    overrides = [*SINGLE_RUN, *FAST_DATA, *FAST_TRAINER, "model=hf", f"model.path={tiny_model_dir}"]
    cfg = compose_config([*overrides, "optim.lr=5e-4"], fast=False)
    assert "optim.lr=0.0005" in learning_rate_warning(cfg)
    with caplog.at_level(logging.WARNING):
        run(cfg, tmp_path)
    assert caplog.text.count("optim.lr=0.0005 trains model.path=") == 1


def test_max_epochs_and_max_steps_together_are_refused():
    cfg = compose_config(["trainer.max_epochs=1"])
    with pytest.raises(ConfigError, match="trainer.max_steps: has no effect: trainer.max_epochs is set"):
        validate_config(cfg, overrides=["trainer.max_epochs=1", "trainer.max_steps=5"])
    with pytest.raises(ConfigError, match="trainer.max_epochs must be a positive integer, got 0"):
        validate_config(compose_config(["trainer.max_epochs=0"]), overrides=["trainer.max_epochs=0"])


@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory) -> tuple[dict, pd.DataFrame, str]:
    # 96 synthetic pairs less 16 for validation, 8 a batch: 10 steps an epoch.
    folder = tmp_path_factory.mktemp("epoch")
    logger = logging.getLogger("dpo_exp")
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    logger.addHandler(handler)
    level, _ = logger.level, logger.setLevel(logging.INFO)
    try:
        # FAST's trainer settings less its max_steps, which max_epochs replaces (both are refused).
        trainer = [setting for setting in FAST_TRAINER if not setting.startswith("trainer.max_steps")]
        epoch = ["trainer.max_epochs=1", "trainer.val_check_interval=null"]
        overrides = [*FAST_MODEL, *FAST_DATA, *trainer, *epoch]
        summary = run(compose_config(overrides, fast=False), folder)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    (line,) = [line for line in lines if line.startswith("[train]")]
    return summary, read_metrics(Path(folder) / METRICS), line


def test_max_epochs_trains_one_pass_and_the_line_says_how_many_steps(one_epoch):
    summary, _, line = one_epoch
    assert summary["global_step"] == 10
    assert "1 epoch = 10 steps (10 a pass); lr 0.0005 (default), warmup 1 steps" in line
    assert "validation every 1 steps" in line and "batch 8" in line


def test_learning_rate_gradient_norm_and_clipping_are_logged(one_epoch):
    summary, metrics, _ = one_epoch
    for column in ("train/lr", "train/grad_norm", "train/clipped_fraction"):
        assert metrics[column].notna().sum() >= 9, column  # logged every step (trainer.log_every_n_steps=1)
    lr = metrics["train/lr"].dropna().tolist()
    assert lr[0] == 0.0 and max(lr) == pytest.approx(5e-4)  # one step of warmup, then cosine decay
    assert (metrics["train/grad_norm"].dropna() > 0).all()
    assert metrics["train/clipped_fraction"].dropna().isin([0.0, 1.0]).all()  # one step a row
    assert 0.0 <= summary["clipped_fraction"] <= 1.0


def test_validation_runs_before_the_first_step_and_is_logged_at_step_0(one_epoch):
    _, metrics, _ = one_epoch
    validations = metrics.dropna(subset=["val/loss"])
    assert validations["step"].iloc[0] == 0
    assert validations["val/loss"].iloc[0] == pytest.approx(0.693147, abs=1e-4)  # policy = reference: ln 2
