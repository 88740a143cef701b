"""An unknown key is refused with the closest real one: a typo's, a leaf's section, TRL's name."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from dpo_exp.config.keys import closest_key, key_paths, unknown_key_message

CFG = OmegaConf.create(
    {
        "beta": 0.1,
        "loss": {"name": "dpo"},
        "sft": {"lr": 3e-3},  # the built-in experiment's, listed first: optim.lr must still win
        "optim": {"lr": 5e-4, "warmup_steps": 10},
        "trainer": {"max_steps": 300},
        "data": {"batch_size": 8, "max_length": 512},
    }
)


def test_key_paths_are_every_section_and_leaf():
    assert key_paths(CFG) == [
        "beta", "loss", "loss.name", "sft", "sft.lr", "optim", "optim.lr", "optim.warmup_steps",
        "trainer", "trainer.max_steps", "data", "data.batch_size", "data.max_length",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("lr", "1e-6", "lr: not a setting of dpo_exp; did you mean optim.lr=1e-6?"),
        ("optim.learnig_rate", "1e-6", "optim.learnig_rate: not a setting of dpo_exp; did you mean optim.lr"),
        ("trainer.max_step", 5, "trainer.max_step: not a setting of dpo_exp; did you mean trainer.max_steps"),
        ("bta", 0.2, "bta: not a setting of dpo_exp; did you mean beta=0.2?"),
        (
            "learning_rate",
            "1e-6",
            "learning_rate: not a setting of dpo_exp; did you mean optim.lr=1e-6? "
            "(learning_rate is TRL's name)",
        ),
        (
            "num_train_epochs",
            1,
            "num_train_epochs: not a setting of dpo_exp; did you mean trainer.max_epochs=1? "
            "(num_train_epochs is TRL's name)",
        ),
        ("loss_type", "sigmoid", "did you mean loss=dpo? (loss_type is TRL's name)"),
        ("loss_type", "ipo", "did you mean loss=ipo?"),
        ("per_device_train_batch_size", 4, "did you mean data.batch_size? (per_device_train_batch_size is "),
        ("gradient_accumulation_steps", 4, "did you mean trainer.accumulate_grad_batches=4?"),
        ("warmup_ratio", 0.1, "did you mean optim.warmup_steps? (warmup_ratio is TRL's name; here: a number"),
        ("max_prompt_length", 128, "did you mean data.max_prompt_length=128?"),
        ("max_steps", 10, "did you mean trainer.max_steps=10?"),
        ("zzzqqq", 1, "zzzqqq: not a setting of dpo_exp (see conf/config.yaml for the settings)"),
    ],
)
def test_an_unknown_key_names_the_closest_real_one(key, value, message):
    refused = unknown_key_message(key, CFG, value)
    assert message in refused and "\n" not in refused


def test_without_a_value_the_key_alone_is_suggested():
    assert closest_key("optim.warmup_step", key_paths(CFG)) == ("optim.warmup_steps", None)
    assert unknown_key_message("optim.warmup_step", CFG).endswith("did you mean optim.warmup_steps?")
