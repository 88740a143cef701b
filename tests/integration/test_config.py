"""Every YAML under conf/ composes and validates; bad settings fail early with the key at fault."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import OmegaConf

from dpo_exp.cli import CONF_DIR, run
from dpo_exp.config import ConfigError, validate_config
from dpo_exp.data.records import DataError
from tests.conftest import DEMONSTRATIONS, PREFERENCES
from tests.helpers import FAST_MODEL, FAST_TRAINER, SINGLE_RUN, compose_config

# Values a user must supply for some options (a path of their own); the tests supply real ones.
REQUIRED = {
    "model/hf": ["model.path={tiny_model_dir}"],
    "data/pairs": [f"data.train_path={PREFERENCES}/standard/train.jsonl.gz"],
    "data/unpaired": [f"data.train_path={PREFERENCES}/unpaired/train.jsonl.gz", "loss=kto"],
    "data/demonstrations": [f"data.train_path={DEMONSTRATIONS}"],
}


def every_option() -> list[tuple[str, str]]:
    root = Path(CONF_DIR)
    return sorted(
        (path.parent.relative_to(root).as_posix(), path.stem)
        for path in root.rglob("*.yaml")
        if path.parent != root
    )


@pytest.mark.parametrize(("group", "option"), every_option())
def test_every_yaml_composes_and_validates(group, option, tiny_model_dir):
    override = f"{group}={option}"
    extra = [value.format(tiny_model_dir=tiny_model_dir) for value in REQUIRED.get(f"{group}/{option}", [])]
    cfg = compose_config([override, *extra], fast=False)
    OmegaConf.resolve(cfg)
    validate_config(cfg)


def test_every_loss_yaml_names_a_registered_loss():
    """One YAML per loss, named after it, plus one per other codebase's name for a loss of ours
    (`loss=sigmoid`, TRL's name for DPO), whose `name` is ours."""
    from dpo_exp.losses import ALIASES, LOSSES

    stems = {stem for group, stem in every_option() if group == "loss"}
    assert {ALIASES.get(stem, stem) for stem in stems} == set(LOSSES)
    for stem in stems:
        name = OmegaConf.load(Path(CONF_DIR) / "loss" / f"{stem}.yaml").name
        assert name == ALIASES.get(stem, stem), stem


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        (["beta=0"], ConfigError, "beta must be a finite number > 0, got 0"),
        (["beta=-0.5"], ConfigError, "beta must be a finite number > 0"),
        (["beta=abc"], ConfigError, "beta must be a number, got 'abc'"),
        (["beta=true"], ConfigError, "beta must be a number"),
        (["loss.name=nope"], ValueError, "unknown loss 'nope'; valid losses: alphapo, aot, aot_unpaired"),
        (
            ["+loss.temperature=2"],
            ConfigError,
            "loss 'dpo' has no option 'temperature'; its options: divergence, divergence_alpha, "
            "label_smoothing",
        ),
        (["+loss.beta=2"], ConfigError, "beta is set at the top level"),
        (
            ["loss=kto", "loss.desirable_weight=lots"],
            ConfigError,
            "loss.desirable_weight must be a number or auto (chosen from the training data), got 'lots'",
        ),
        (
            ["loss=kto", "loss.undesirable_weight=auto"],
            ConfigError,
            "loss.undesirable_weight must be a number, got 'auto' "
            "(auto is accepted by loss=kto loss.desirable_weight only)",
        ),
        (["loss=dpo", "loss.label_smoothing=auto"], ConfigError, "loss.label_smoothing must be a number"),
        (
            ["loss=ipo", "loss.length_normalize=yes"],
            ConfigError,
            "loss.length_normalize must be true or false",
        ),
        # Values a loss refuses when called, refused at the start with its own reason.
        (
            ["loss=exo_pair", "loss.label_smoothing=0"],
            ConfigError,
            "loss=exo_pair: label_smoothing must be in (0, 0.5) for exo_pair, got 0",
        ),
        (
            ["loss=dpo", "loss.divergence=kl"],
            ConfigError,
            "loss=dpo: divergence must be one of reverse_kl, forward_kl, js_divergence, "
            "alpha_divergence, got 'kl'",
        ),
        (
            ["loss=ipo", "loss.divergence_alpha=0.3"],
            ConfigError,
            "loss=ipo: divergence_alpha acts only with divergence=alpha_divergence, not reverse_kl",
        ),
        (
            ["loss=mix", "loss.terms=[sigmoid,kto]", "loss.weights=null"],
            ConfigError,
            "loss=mix: a mix's terms are pairwise losses; kto",
        ),
        (
            ["loss=mix", "loss.terms=[sigmoid,nope]", "loss.weights=[1,2]"],
            ConfigError,
            "loss=mix: unknown loss 'nope'; valid losses:",
        ),
        (
            ["loss=mix", "loss.weights=[1.0]"],
            ConfigError,
            "loss=mix: a mix needs terms and one weight per term (weights null: 1 each)",
        ),
        (
            ["loss=mix", "+loss.options.ipo.length_normalize=false"],
            ConfigError,
            "loss=mix: options for ipo, which is not a term of the mix (sigmoid, bco_pair, sft)",
        ),
        (["data.source=nope"], DataError, "unknown data source 'nope'; valid sources:"),
        (
            ["data.max_prompt_length=40"],
            ConfigError,
            "data.max_prompt_length (40) must be below data.max_length",
        ),
        (["data.batch_size=0"], ConfigError, "data.batch_size must be a positive integer"),
        (
            ["data=hh_helpful", "data.train_path=/no/such.jsonl"],
            ConfigError,
            "data file not found: /no/such.jsonl",
        ),
        (["data=pairs"], ConfigError, "data.train_path: data source 'pairs' reads its records from a file"),
        (
            ["data=hh_helpful", "data.dataset=/no/such/folder"],
            ConfigError,
            "data.dataset: dataset folder not found: /no/such/folder",
        ),
        (
            ["data=hh_helpful", f"data.dataset={PREFERENCES}"],
            ConfigError,
            "data.revision=09be8c5bbc57cb3887f3a9732ad6aa7ec602a1fa: data.dataset=",
        ),
        (["data=synthetic", "+data.dataset=Anthropic/hh-rlhf"], ConfigError, "generates its records"),
        (
            ["data=gsm8k", "+data.dataset=openai/gsm8k"],
            ConfigError,
            "data.dataset: data=gsm8k samples its data",
        ),
        (["seed=1.5"], ConfigError, "seed must be an integer"),
        (
            ["data=unpaired", f"data.train_path={PREFERENCES}/unpaired/train.jsonl.gz", "loss=dpo"],
            ConfigError,
            "loss=dpo: data=unpaired holds unpaired rows (prompt, completion, label), and loss=dpo trains "
            "on pairs: use loss=kto, loss=rft, loss=bco, or pairs (data=pairs)",
        ),
        (["nonfinite=ignore"], ConfigError, "nonfinite must be one of stop, skip"),
    ],
)
def test_bad_settings_fail_before_anything_loads(overrides, error, message, tmp_path):
    cfg = compose_config(SINGLE_RUN + FAST_MODEL + FAST_TRAINER + overrides, fast=False)
    with pytest.raises(error, match=None) as raised:
        run(cfg, tmp_path / "run")
    assert message in str(raised.value)
    assert not (tmp_path / "run").exists()  # refused before the run folder is made


def test_unknown_group_option_lists_the_valid_ones():
    with pytest.raises(MissingConfigException) as raised:
        compose_config(["model=nope"], fast=False)
    assert "Available options" in str(raised.value) and "tiny" in str(raised.value)


def test_wrong_type_for_a_trainer_value_is_refused_by_lightning(tmp_path):
    cfg = compose_config(["trainer.max_steps=lots"])
    with pytest.raises((ValueError, TypeError, ConfigCompositionException)):
        run(cfg, tmp_path)
    assert not (tmp_path / "summary.json").exists()


# -- every key changes the run or is refused ------------------------------------------------

FIXED = ["data=synthetic"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["+optim.momentum=0.9"], "optim.momentum: Key 'momentum' not in 'OptimSchema'"),
        (["+speed.turbo=true"], "speed.turbo: Key 'turbo' not in 'SpeedSchema'"),
        (["+checkpoint.every=3"], "checkpoint.every: Key 'every' not in 'CheckpointSchema'"),
        (["+data.shuffle_seed=3"], "data.shuffle_seed: Key 'shuffle_seed' not in 'DataSchema'"),
        (["+learning_rate=0.1"], "learning_rate: not a setting of dpo_exp; did you mean optim.lr=0.1?"),
        (["+lr=0.1"], "lr: not a setting of dpo_exp; did you mean optim.lr=0.1?"),
        (["+optim.learnig_rate=0.1"], "optim.learnig_rate: Key 'learnig_rate' not in 'OptimSchema'; did you"),
        (["+num_train_epochs=1"], "did you mean trainer.max_epochs=1? (num_train_epochs is TRL's name)"),
        (["data.shuffle=maybe"], "data.shuffle: Value 'maybe' is not a valid bool"),
        (["optim.warmup_steps=ten"], "optim.warmup_steps: Value 'ten' of type 'str' could not be converted"),
        (["reference.cache=sometimes"], "reference.cache: Value 'sometimes' is not a valid bool"),
    ],
)
def test_unknown_keys_and_wrong_types_are_refused_with_the_key(overrides, message):
    with pytest.raises(ConfigError) as raised:
        validate_config(compose_config(FIXED + overrides, fast=False))
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("lr=1e-6", "lr: not a setting of dpo_exp; did you mean optim.lr=1e-6?"),
        ("optim.learnig_rate=1e-6", "optim.learnig_rate: not a setting of dpo_exp; did you mean optim.lr="),
        ("trainer.max_step=5", "trainer.max_step: not a setting of dpo_exp; did you mean trainer.max_steps"),
        ("loss_type=sigmoid", "loss_type: not a setting of dpo_exp; did you mean loss=dpo? (loss_type is"),
        ("~optim.lr_max", "optim.lr_max: not a setting of dpo_exp; did you mean optim.lr?"),
    ],
)
def test_hydra_refuses_an_unknown_key_in_one_line_with_the_closest(override, message):
    """Hydra refuses these while composing, before the validator runs: its "use +lr=..." is replaced."""
    with pytest.raises(SystemExit) as refused:
        compose_config([*FIXED, override], fast=False)
    assert refused.value.code == message or str(refused.value.code).startswith(message)


@pytest.mark.parametrize(
    ("override", "key", "reason"),
    [
        ("online.rounds=3", "online.rounds", "there is nothing to resample"),
        ("online.reference=previous", "online.reference", "there is nothing to resample"),
        ("sft.steps=5", "sft.steps", "a fixed dataset trains the model you named"),
        ("sample.num_samples=2", "sample.num_samples", "nothing is sampled"),
        ("evaluate.batch_size=8", "evaluate.batch_size", "a fixed dataset has no verifier"),
        ("cache_dir=/tmp/elsewhere", "cache_dir", "none is built"),
    ],
)
def test_experiment_settings_on_a_fixed_dataset_are_refused_with_why(override, key, reason):
    cfg = compose_config([*FIXED, override], fast=False)
    with pytest.raises(ConfigError) as raised:
        validate_config(cfg, overrides=[*FIXED, override])
    assert str(raised.value).startswith(f"{key}: data=synthetic is a fixed dataset")
    assert reason in str(raised.value)


def test_a_task_added_to_a_fixed_dataset_is_refused():
    cfg = compose_config([*FIXED, "+task.name=arithmetic"], fast=False)
    with pytest.raises(ConfigError, match="task: defines the built-in experiment's problems"):
        validate_config(cfg)


def test_a_fixed_dataset_run_refuses_every_offending_key_at_once():
    overrides = [*FIXED, "loss=rft", "online.rounds=3", "sft.steps=9"]
    with pytest.raises(ConfigError) as raised:
        validate_config(compose_config(overrides, fast=False), overrides=overrides)
    assert "online.rounds" in str(raised.value) and "sft.steps" in str(raised.value)


def test_beta_is_refused_for_a_loss_without_one():
    overrides = [*FIXED, "loss=rft", "beta=0.5"]
    with pytest.raises(ConfigError, match="beta: loss=rft has no beta"):
        validate_config(compose_config(overrides, fast=False), overrides=overrides)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["+data.train_path=x.jsonl"],
            "data.train_path: data=arithmetic samples its data from the SFT model",
        ),
        (["~task"], "task: data=arithmetic samples its pairs on a task, and the config has none"),
        (["loss=orpo", "online.reference=previous"], "online.reference: loss=orpo uses no reference model"),
    ],
)
def test_the_built_in_experiment_refuses_what_its_data_replaces(overrides, message):
    with pytest.raises(ConfigError) as raised:
        validate_config(compose_config(overrides, fast=False), overrides=overrides)
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            [*FIXED, "reference.cache_dir=/tmp/x"],
            "reference.cache_dir: has no effect: the reference cache is off",
        ),
        (
            [*FIXED, "trainer.enable_checkpointing=false", "checkpoint.every_n_steps=5"],
            "checkpoint.every_n_steps: has no effect: trainer.enable_checkpointing=false",
        ),
        (
            [*FIXED, "export.save=false", "export.lora=adapter"],
            "export.lora: has no effect: nothing is exported",
        ),
        (
            ["online.reference=previous"],
            "online.reference: has no effect: one round's reference is the SFT model",
        ),
        (["sft.target_reward=null", "sft.check_every=5"], "sft.check_every: has no effect"),
        (
            [*FIXED, "speed.share_prompt=false", "speed.pack=true"],
            "speed.pack: has no effect: speed.share_prompt=false: rows are not shared",
        ),
        (
            [*FIXED, "speed.head_on_completions=false", "speed.logits_chunk=256"],
            "speed.logits_chunk: has no effect: speed.head_on_completions=false computes the full logits",
        ),
        (
            [*FIXED, "optim.master_weights=false"],
            "optim.master_weights: has no effect: the weights are fp32",
        ),
        (
            [*FIXED, "+trainer.max_step=3"],
            "trainer.max_step: not an argument of lightning.Trainer; did you mean trainer.max_steps=3?",
        ),
    ],
)
def test_a_key_that_another_setting_switches_off_is_refused(overrides, message):
    with pytest.raises(ConfigError) as raised:
        validate_config(compose_config(overrides, fast=False), overrides=overrides)
    assert message in str(raised.value)


# -- settings that cannot mean anything ----------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["trainer.max_steps=0"], "trainer.max_steps must be a positive integer, got 0"),
        (
            ["speed.logits_chunk=0"],
            "speed.logits_chunk must be a positive integer, got 0 (or null: no chunks)",
        ),
        (["trainer.max_steps=-1"], "trainer.max_steps must be a positive integer, got -1"),
        (["trainer.val_check_interval=0"], "trainer.val_check_interval must be a positive integer, got 0"),
        (
            ["checkpoint.every_n_steps=0"],
            "checkpoint.every_n_steps must be a positive integer, got 0 "
            "(to save no checkpoints: trainer.enable_checkpointing=false)",
        ),
        (["checkpoint.keep_last=0"], "checkpoint.keep_last must be a positive integer, got 0"),
        (
            ["data.val_size=0"],
            "data.val_size must be a positive integer, got 0 (with no validation file or split",
        ),
        (["model.dtype=float99"], "model.dtype: 'float99' is not a torch dtype"),
        (["model.ref_dtype=half_precision"], "model.ref_dtype: 'half_precision' is not a torch dtype"),
        (["resume=/no/such/step000004.ckpt"], "resume: checkpoint not found: /no/such/step000004.ckpt"),
    ],
)
def test_settings_that_cannot_mean_anything_are_refused_with_the_key(overrides, message, tmp_path):
    with pytest.raises(ConfigError) as raised:
        run(compose_config(overrides), tmp_path / "run")
    assert message in str(raised.value)
    assert not (tmp_path / "run").exists()


def test_the_built_in_experiment_refuses_negative_sft_steps_zero_samples_and_a_negative_margin():
    with pytest.raises(
        ConfigError, match=r"sft.steps must be a non-negative integer \(0: the model as it is\)"
    ):
        validate_config(compose_config(["sft.steps=-1"], fast=False))
    with pytest.raises(ConfigError, match="sft.target_reward: sft.steps=0 trains nothing"):
        validate_config(compose_config(["sft.steps=0"], fast=False))
    validate_config(compose_config(["sft.steps=0", "sft.target_reward=null"], fast=False))
    with pytest.raises(ConfigError, match="sample.min_margin must be at least 0"):
        validate_config(compose_config(["sample.min_margin=-0.1"], fast=False))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["task.reward_output=prob:POSITIVE"],
            "task.reward_output: has no effect: task.reward is a function",
        ),
        (
            ["evaluate.reward_output=logit:1"],
            "evaluate.reward_output: has no effect: evaluate.reward is null",
        ),
        (
            ["evaluate.reward=dpo_exp.tasks.arithmetic:reward", "evaluate.reward_revision=abc"],
            "evaluate.reward_revision: has no effect",
        ),
        (["+task.options.colour=red"], "task.options: dpo_exp.tasks.arithmetic:problems does not take them"),
    ],
)
def test_reward_settings_that_do_nothing_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(compose_config(overrides, fast=False), overrides)
    with pytest.raises(ConfigError, match="sample.num_samples must be a positive integer, got 0"):
        validate_config(compose_config(["sample.num_samples=0"], fast=False))


def hf_model(*overrides: str):
    return compose_config(["data=synthetic", *FAST_TRAINER, "model=hf", *overrides], fast=False)


def test_model_folders_that_cannot_load_are_refused_naming_the_folder_or_file(tiny_model_dir, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(
        ConfigError, match=rf"model.path: {empty} is not a saved model folder \(it is empty\)"
    ):
        validate_config(hf_model(f"model.path={empty}"))
    with pytest.raises(ConfigError, match=r"model.path: no such folder: /no/such/model"):
        validate_config(hf_model("model.path=/no/such/model"))
    cut = tmp_path / "cut"
    shutil.copytree(tiny_model_dir, cut)
    weights = cut / "model.safetensors"
    size = weights.stat().st_size
    weights.write_bytes(weights.read_bytes()[: size - 1000])
    with pytest.raises(ConfigError) as raised:
        validate_config(hf_model(f"model.path={tiny_model_dir}", f"model.ref_path={cut}"))
    assert f"model.ref_path: {weights} is truncated ({size - 1000} bytes of {size})" in str(raised.value)
