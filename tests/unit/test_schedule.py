"""A run's budget and intervals in optimizer steps: epochs counted with batch, accumulation and
processes; intervals chosen from the budget; warmup as a ratio; the learning rate by model."""

from __future__ import annotations

from dpo_exp.training.schedule import (
    BUILT_LR,
    PRETRAINED_LR,
    default_lr,
    plan_schedule,
    steps_per_epoch,
    trainer_arguments,
    world_size_of,
)

OPTIM = {"warmup_steps": None, "warmup_ratio": 0.1}
DEFAULTS = {"max_steps": 300, "max_epochs": None, "val_check_interval": None, "log_every_n_steps": None}


def test_an_epoch_is_every_full_global_batch_once_in_optimizer_steps():
    # 100 rows / (8 a process x 2 processes) = 6 global batches (the 7th incomplete, dropped);
    # 2 batches a step: 3 steps. With 4 a step Lightning steps on the 2 left over too: 2 steps.
    assert steps_per_epoch(100, 8, 2, 2) == 3
    assert steps_per_epoch(100, 8, 2, 4) == 2
    assert steps_per_epoch(100, 8, 1, 1) == 12


def test_max_epochs_replaces_max_steps_and_the_line_says_how_many_steps():
    trainer = {**DEFAULTS, "max_epochs": 2, "accumulate_grad_batches": 2}
    schedule = plan_schedule(trainer, OPTIM, rows=100, batch_size=8, world_size=2)
    assert (schedule.steps, schedule.epoch_steps) == (6, 3)
    assert schedule.describe() == "2 epochs = 6 steps (3 a pass)"
    arguments = trainer_arguments(trainer, schedule)
    assert arguments["max_steps"] == 6 and "max_epochs" not in arguments
    assert arguments["val_check_interval"] == schedule.val_every * 2  # Lightning counts batches


def test_null_intervals_give_a_short_run_curves_and_a_long_one_a_bounded_log():
    short = plan_schedule(DEFAULTS, OPTIM, rows=1000, batch_size=8, world_size=1)
    assert (short.steps, short.val_every, short.log_every, short.warmup) == (300, 30, 1, 30)
    assert (
        plan_schedule({**DEFAULTS, "max_steps": 25}, OPTIM, rows=1000, batch_size=8, world_size=1).val_every
        == 3
    )
    long = plan_schedule({**DEFAULTS, "max_steps": 10000}, OPTIM, rows=1000, batch_size=8, world_size=1)
    assert (long.val_every, long.log_every) == (1000, 50)
    given = {**DEFAULTS, "val_check_interval": 7, "log_every_n_steps": 3}
    assert plan_schedule(given, {"warmup_steps": 5}, rows=1000, batch_size=8, world_size=1).intervals() == (
        "warmup 5 steps, validation every 7 steps, logged every 3 steps"
    )


def test_the_default_learning_rate_follows_the_model():
    assert default_lr("Qwen/Qwen2.5-0.5B") == PRETRAINED_LR == 1e-6  # TRL's DPOConfig default
    assert default_lr(None) == BUILT_LR == 5e-4  # a model built from its config: random weights


def test_the_world_size_is_read_from_the_strategy_when_it_is_a_number():
    assert world_size_of({"devices": 2, "num_nodes": 2}) == 4
    assert world_size_of({"devices": [0, 1], "num_nodes": 1}) == 2
    assert world_size_of({"devices": "auto", "num_nodes": 1}) is None
