"""A setting that would do nothing is refused wherever it was set: a user's config file (in a
`--config-dir`) or a preset under conf/, as on the command line, with the same message."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

from dpo_exp.cli import CONF_DIR
from dpo_exp.config import ConfigError, validate_config
from dpo_exp.config.defaults import set_keys
from tests.helpers import compose_config


def compose_with_user_file(tmp_path, text: str, *overrides: str):
    """The config `--config-dir <tmp_path> experiment=mine` composes, `mine.yaml` holding `text`."""
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "mine.yaml").write_text("# @package _global_\n" + text)
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(
            "config", overrides=[f"hydra.searchpath=[file://{tmp_path}]", "experiment=mine", *overrides]
        )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("defaults:\n  - override /loss: rft\nbeta: 0.5\n", "beta: loss=rft has no beta"),
        ("online:\n  rounds: 3\n", "online.rounds: data=synthetic is a fixed dataset"),
        ("sft:\n  steps: 5\n", "sft.steps: data=synthetic is a fixed dataset"),
        (
            "trainer:\n  enable_checkpointing: false\ncheckpoint:\n  every_n_steps: 5\n",
            "checkpoint.every_n_steps: has no effect: trainer.enable_checkpointing=false",
        ),
        ("reference:\n  cache_dir: /tmp/elsewhere\n", "reference.cache_dir: has no effect: the reference"),
        ("optim:\n  master_weights: false\n", "optim.master_weights: has no effect: the weights are fp32"),
    ],
)
def test_a_key_set_in_a_user_config_file_is_refused_as_on_the_command_line(tmp_path, text, message):
    cfg = compose_with_user_file(tmp_path, text, "data=synthetic")
    with pytest.raises(ConfigError) as refused:
        validate_config(cfg)
    assert message in str(refused.value)


def test_a_preset_under_conf_that_sets_an_experiment_key_on_a_fixed_dataset_is_refused():
    cfg = compose_config(["data=synthetic", "experiment=iterative_dpo"], fast=False)
    with pytest.raises(ConfigError, match="online.rounds: data=synthetic is a fixed dataset"):
        validate_config(cfg)


def test_a_data_presets_own_values_are_its_defaults_not_settings():
    # hh_helpful reads its validation split; its val_size: 0 is the preset's, not the user's.
    assert set_keys(compose_config(["data=hh_helpful"], fast=False)) == []
    validate_config(compose_config(["data=hh_helpful"], fast=False))
    with pytest.raises(ConfigError, match="data.val_size: has no effect: validation is read"):
        validate_config(compose_config(["data=hh_helpful", "data.val_size=32"], fast=False))


def test_keys_set_to_the_values_the_options_give_are_not_set():
    cfg = compose_config(["data=synthetic", "output_root=/tmp/elsewhere", "beta=0.1"], fast=False)
    assert set_keys(cfg) == ["output_root"]  # reference.cache_dir follows it: ${output_root}/...
    assert set_keys(cfg, ["beta=0.1"]) == ["beta", "output_root"]  # the command line's, as it was
