"""Each stage's key is the hash of the one settings object its builder reads: every input changes
it, a setting the stage does not read leaves it alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from dpo_exp.experiment.cache import StageResult, stage_key
from dpo_exp.experiment.stages import (
    Task,
    container,
    reference_eval_settings,
    sample_settings,
    sft_settings,
)
from tests.helpers import compose_config

SFT = StageResult(Path("/cache/sft/0123456789abcdef"), reused=True)
OTHER_REWARD = "task.reward=tests.e2e.rewards:partial_credit"

# Settings no stage reads (the preference run's own, or display only).
IRRELEVANT = ["beta=0.5", "optim.lr=1e-3", "trainer.max_steps=7", "trainer.log_every_n_steps=3",
              "trainer.enable_progress_bar=false", "loss=ipo"]  # fmt: skip


def key(settings_of, overrides: list[str]) -> str:
    cfg = compose_config(overrides, fast=False)
    return stage_key(container(settings_of(cfg, Task.from_config(cfg.task))))


def sft_key(cfg, task):
    return sft_settings(cfg, task)


def sample_key(cfg, task):
    return sample_settings(cfg, task, SFT.path.name, int(cfg.seed))


def eval_key(cfg, task):
    return reference_eval_settings(cfg, task, SFT)


SFT_INPUTS = [OTHER_REWARD, "task.max_new_tokens=7", "task.splits.sft=100", "task.options.seed=1",
              "sft.lr=1e-3", "sft.seed=1", "sft.target_reward=0.6", "model.config.hidden_size=64",
              "data.max_length=40", "evaluate.batch_size=32"]  # fmt: skip
SAMPLE_INPUTS = [OTHER_REWARD, "task.max_new_tokens=7", "task.pass_threshold=0.5", "task.splits.sample=10",
                 "sample.num_samples=4", "sample.temperature=0.7", "seed=1",
                 "sample.backend=vllm"]  # fmt: skip
EVAL_INPUTS = [OTHER_REWARD, "task.max_new_tokens=7", "task.splits.eval=10", "evaluate.split=tune",
               "evaluate.batch_size=32", "evaluate.seed=1"]  # fmt: skip


@pytest.mark.parametrize(
    ("settings_of", "override"),
    [(sft_key, o) for o in SFT_INPUTS]
    + [(sample_key, o) for o in SAMPLE_INPUTS]
    + [(eval_key, o) for o in EVAL_INPUTS],
)
def test_every_input_of_a_stage_changes_its_key(settings_of, override):
    assert key(settings_of, [override]) != key(settings_of, [])


@pytest.mark.parametrize("settings_of", [sft_key, sample_key, eval_key])
@pytest.mark.parametrize("override", IRRELEVANT)
def test_a_setting_the_stage_does_not_read_leaves_its_key(settings_of, override):
    assert key(settings_of, [override]) == key(settings_of, [])


@pytest.mark.parametrize("override", ["sft.lr=1e-3", "sample.num_samples=4"])
def test_the_evaluation_of_the_sft_model_ignores_how_it_is_sampled_or_trained(override):
    # The SFT model's identity is its stage key (`sft`), so its training settings come in through it.
    assert key(eval_key, [override]) == key(eval_key, [])
