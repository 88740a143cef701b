"""Checks on the composed config, run once at the entry before any data is read or model loads.

Every key either changes the run or is refused here, named by its dotted key with the reason:
unknown keys and wrong types (the schemas in `schema.py`), values that cannot work, and settings of
the built-in experiment given to a run on a fixed dataset, where they would do nothing.
"""

from __future__ import annotations

import inspect
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from dpo_exp.config.defaults import override_keys, set_keys
from dpo_exp.config.dependent import check_dependent_keys, validation_is_read
from dpo_exp.config.generation_eval import (
    check_experiment_evaluate_keys,
    check_generation_eval,
    fixed_data_evaluate_refusals,
    generation_eval_wanted,
)
from dpo_exp.config.keys import key_paths, suggestion, unknown_key_message
from dpo_exp.config.schema import EXPERIMENT_SECTIONS, RUN_SECTIONS, TASK_SOURCE, TOP_LEVEL_KEYS
from dpo_exp.config.task import check_task
from dpo_exp.console import VERBOSITY
from dpo_exp.data.demonstrations import DEMONSTRATIONS
from dpo_exp.data.sources import GENERATED, get_source
from dpo_exp.errors import ConfigError
from dpo_exp.experiment.vllm_sampling import check_backend
from dpo_exp.losses import LOSSES, LossSpec, check_options, get_loss, loss_hyperparameters
from dpo_exp.models.checks import check_model_config
from dpo_exp.rows import is_local_dataset
from dpo_exp.training.build import loss_options
from dpo_exp.training.export import check_export
from dpo_exp.training.guards import ACTIONS as NONFINITE_ACTIONS
from dpo_exp.training.reference_sync import check_reference_sync
from dpo_exp.training.resume import locate_checkpoint
from dpo_exp.training.schedule import HIGHEST_PRETRAINED_LR, HIGHEST_SFT_LR, default_lr
from dpo_exp.world import check_world

__all__ = ["ConfigError", "is_experiment", "learning_rate_warning", "override_keys", "validate_config"]


def is_experiment(cfg: DictConfig) -> bool:
    """Whether the data is the built-in experiment's (sampled on a task) rather than a fixed dataset."""
    return cfg.data.source == TASK_SOURCE


def validate_config(
    cfg: DictConfig, overrides: Sequence[str] = (), *, changed: Sequence[str] | None = None
) -> LossSpec:
    """Fail fast, with the key at fault, on settings that would fail or do nothing; return the loss.

    `overrides` are the run's command-line (and sweep) overrides, `key=value`. A key they set, or
    that a config file sets away from what the chosen group options give (`set_keys`), is refused
    where it would do nothing: a setting of the built-in experiment on a fixed dataset, `beta` for a
    loss without one, a key another setting switches off. `changed`, where given, are the keys
    set instead (a run folder's resolved config, checked again, differs from a fresh composition in
    every value an interpolation made).
    """
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"required values are not set: {', '.join(missing)} (set them on the command line)")
    check_top_level(cfg)
    check_positive_number(cfg.beta, "beta")
    if not isinstance(cfg.seed, int) or isinstance(cfg.seed, bool):
        raise ConfigError(f"seed must be an integer, got {cfg.seed!r}")
    if cfg.get("verbosity", "normal") not in VERBOSITY:
        raise ConfigError(f"verbosity must be one of {', '.join(VERBOSITY)}, got {cfg.verbosity!r}")
    if cfg.nonfinite not in NONFINITE_ACTIONS:
        raise ConfigError(f"nonfinite must be one of {', '.join(NONFINITE_ACTIONS)}, got {cfg.nonfinite!r}")
    for section, schema in RUN_SECTIONS.items():
        check_schema(cfg[section], schema, section)
    spec = get_loss(cfg.loss.name)
    check_loss_options(cfg.loss, spec, cfg.beta)
    changed = set_keys(cfg, overrides) if changed is None else list(changed)
    check_unused_beta(spec, changed)
    if is_experiment(cfg):
        check_experiment(cfg, spec)
        check_experiment_evaluate_keys(cfg, changed)
    else:
        check_fixed_data(cfg, changed)
    check_data(cfg.data)
    check_unpaired_data(cfg.data, spec)
    check_demonstrations(cfg.data, spec)
    check_counts(cfg)
    check_model_config(cfg)
    check_positive_number(cfg.optim.lr, "optim.lr")
    if cfg.speed.logits_chunk is not None:
        check_positive_integer(cfg.speed.logits_chunk, "speed.logits_chunk", " (or null: no chunks)")
    check_trainer(cfg.trainer)
    check_world(cfg.strategy.num_nodes, cfg.strategy.devices)
    check_dependent_keys(cfg, changed)
    check_reference_sync(cfg, spec.needs_reference, list(changed))
    check_export(cfg, list(changed))
    check_resume(cfg.resume)
    return spec


def check_top_level(cfg: DictConfig) -> None:
    unknown = sorted(set(cfg) - set(TOP_LEVEL_KEYS))
    if unknown:
        raise ConfigError(unknown_key_message(str(unknown[0]), cfg, cfg._get_node(unknown[0])._value()))


def check_schema(node: Any, schema: type, key: str) -> None:
    """Merge `node` onto `schema`: an unknown key or a value of the wrong type names its key (and
    an unknown key, the closest real one)."""
    if not isinstance(node, DictConfig):
        raise ConfigError(f"{key} must be a mapping of settings, got {node!r}")
    try:
        OmegaConf.merge(OmegaConf.structured(schema), node)
    except OmegaConfBaseException as error:
        where = f"{key}.{error.full_key}" if getattr(error, "full_key", None) else key
        reason = str(error).splitlines()[0]
        hint = ""
        if isinstance(error, ConfigKeyError) and getattr(error, "full_key", None):
            value = OmegaConf.select(node, str(error.full_key), default=None, throw_on_missing=False)
            known = key_paths(OmegaConf.structured(schema), f"{key}.")
            hint = suggestion(where, known, None if isinstance(value, DictConfig) else value)
        raise ConfigError(f"{where}: {reason}{hint}") from None


def check_positive_number(value: Any, key: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{key} must be a number, got {value!r} ({type(value).__name__})")
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{key} must be a finite number > 0, got {value!r}")


def check_loss_options(loss_cfg: DictConfig, spec: LossSpec, beta: Any) -> None:
    """Loss options are the loss function's keyword-only parameters (less beta, set at the top);
    their values are the ones the loss accepts when called (`check_options`)."""
    defaults = loss_hyperparameters(spec)
    accepted = set(defaults) - {"beta"}
    options = loss_options(loss_cfg)
    for option, value in options.items():
        if option == "beta":
            raise ConfigError("beta is set at the top level (`beta=0.1`), not under loss")
        if option not in accepted:
            valid = ", ".join(sorted(accepted)) or "none"
            raise ConfigError(f"loss '{spec.name}' has no option '{option}'; its options: {valid}")
        if isinstance(value, str) and not isinstance(defaults[option], str):
            check_text_loss_option(spec, option, value, defaults[option])
    try:  # beta is already checked: a finite number > 0
        check_options(spec, options, float(beta))
    except (ValueError, TypeError) as error:
        raise ConfigError(f"loss={spec.name}: {error}") from None


def check_text_loss_option(spec: LossSpec, option: str, value: str, default: Any) -> None:
    """A loss option is a number or a bool; the text `auto` only where the loss lets the run choose
    it from the training data (`LossSpec.auto_options`)."""
    if option in spec.auto_options and value == "auto":
        return
    if option in spec.auto_options:
        raise ConfigError(
            f"loss.{option} must be a number or auto (chosen from the training data), got {value!r}"
        )
    kind = "true or false" if isinstance(default, bool) else "a number"
    hint = ""
    if value == "auto":
        owners = [f"loss={s.name} loss.{name}" for s in LOSSES.values() for name in s.auto_options]
        hint = f" (auto is accepted by {', '.join(owners)} only)"
    raise ConfigError(f"loss.{option} must be {kind}, got {value!r}{hint}")


def check_unpaired_data(data_cfg: DictConfig, spec: LossSpec) -> None:
    """Unpaired rows (prompt, completion, label) train only the losses that take unpaired examples."""
    if data_cfg.source == "unpaired" and spec.paired:
        takers = ", ".join(f"loss={s.name}" for s in LOSSES.values() if not s.paired)
        raise ConfigError(
            f"loss={spec.name}: data={data_cfg.name} holds unpaired rows (prompt, completion, label), and "
            f"loss={spec.name} trains on pairs: use {takers}, or pairs (data=pairs)"
        )


def check_demonstrations(data_cfg: DictConfig, spec: LossSpec) -> None:
    """Demonstrations train by SFT: a loss on desirable completions alone, with no reference."""
    if data_cfg.source != DEMONSTRATIONS or (spec.positives_only and not spec.needs_reference):
        return
    sft = ", ".join(f"loss={s.name}" for s in LOSSES.values() if s.positives_only and not s.needs_reference)
    raise ConfigError(
        f"loss={spec.name}: data={data_cfg.name} holds demonstrations (prompt, completion), which train by "
        f"SFT, the NLL of their completions ({sft}, the preset's); loss={spec.name} needs "
        + ("pairs (data=pairs)" if spec.paired else "labelled examples (data=unpaired)")
    )


def check_data(data_cfg: DictConfig) -> None:
    if data_cfg.source != TASK_SOURCE:
        get_source(data_cfg.source)
        check_data_location(data_cfg)
    for key in ("train_path", "validation_path"):
        path = data_cfg.get(key)
        if path is not None and not os.path.exists(path):
            raise ConfigError(f"data.{key}: data file not found: {path}")
    if data_cfg.max_prompt_length >= data_cfg.max_length:
        raise ConfigError(
            f"data.max_prompt_length ({data_cfg.max_prompt_length}) must be below "
            f"data.max_length ({data_cfg.max_length}) to leave room for the response"
        )
    for key in ("batch_size", "eval_batch_size", "max_length"):
        value = data_cfg[key]
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ConfigError(f"data.{key} must be a positive integer, got {value!r}")


def check_data_location(data_cfg: DictConfig) -> None:
    """A source that reads rows has a file or a dataset to read; one that generates them has none;
    a local dataset folder exists and has no revision."""
    source, dataset = data_cfg.source, data_cfg.get("dataset")
    if source in GENERATED:
        for key in ("train_path", "validation_path", "dataset"):
            if data_cfg.get(key) is not None:
                raise ConfigError(
                    f"data.{key}: data source '{source}' generates its records and reads nothing"
                )
        return
    if data_cfg.get("train_path") is None and not dataset:
        raise ConfigError(
            f"data.train_path: data source '{source}' reads its records from a file (data.train_path) "
            "or a dataset (data.dataset: a hub id or a local folder); neither is set"
        )
    if data_cfg.get("train_path") is None and data_cfg.get("validation_path") is not None:
        raise ConfigError(
            "data.validation_path: with no data.train_path, validation is data.validation_split"
        )
    if dataset and is_local_dataset(str(dataset)) and data_cfg.get("train_path") is None:
        if not Path(str(dataset)).expanduser().is_dir():
            raise ConfigError(f"data.dataset: dataset folder not found: {dataset}")
        if data_cfg.get("revision") is not None:
            raise ConfigError(
                f"data.revision={data_cfg.revision}: data.dataset={dataset} is a local folder, which has "
                "no revisions; set data.revision=null"
            )


def check_positive_integer(value: Any, key: str, hint: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{key} must be a positive integer, got {value!r}{hint}")


def check_counts(cfg: DictConfig) -> None:
    """Step counts and sizes where zero or a negative number would silently do nothing."""
    if cfg.trainer.get("max_epochs") is None:
        check_positive_integer(cfg.trainer.max_steps, "trainer.max_steps", " (the number of optimizer steps)")
    else:
        check_positive_integer(
            cfg.trainer.max_epochs, "trainer.max_epochs", " (passes over the training data)"
        )
    for key, what in (("val_check_interval", "between validations"), ("log_every_n_steps", "between logs")):
        if cfg.trainer.get(key) is not None:
            check_positive_integer(cfg.trainer[key], f"trainer.{key}", f" (steps {what}; null: chosen)")
    ratio = cfg.optim.warmup_ratio
    if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0 <= ratio < 1:
        raise ConfigError(f"optim.warmup_ratio must be a number in [0, 1), got {ratio!r}")
    off = " (to save no checkpoints: trainer.enable_checkpointing=false)"
    check_positive_integer(cfg.checkpoint.every_n_steps, "checkpoint.every_n_steps", off)
    check_positive_integer(cfg.checkpoint.keep_last, "checkpoint.keep_last", off)
    if is_experiment(cfg):
        check_experiment_numbers(cfg)
    elif not validation_is_read(cfg.data):
        hint = " (with no validation file or split, the validation split is cut from the training data)"
        check_positive_integer(cfg.data.val_size, "data.val_size", hint)


def check_experiment_numbers(cfg: DictConfig) -> None:
    """SFT steps (0: the model as it is), samples per prompt, the pairs' reward margin."""
    steps = cfg.sft.steps
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ConfigError(f"sft.steps must be a non-negative integer (0: the model as it is), got {steps!r}")
    if steps == 0 and cfg.sft.target_reward is not None:
        raise ConfigError("sft.target_reward: sft.steps=0 trains nothing, so no target can be reached")
    check_positive_integer(cfg.sample.num_samples, "sample.num_samples")
    if float(cfg.sample.min_margin) < 0:
        raise ConfigError(f"sample.min_margin must be at least 0 (a reward gap), got {cfg.sample.min_margin}")


def learning_rate_warning(cfg: DictConfig) -> str | None:
    """A warning when a model loaded from weights would train at a rate far above its method's range
    (DPO's; SFT's, on demonstrations)."""
    lr, path = float(cfg.optim.lr), cfg.model.get("path")
    sft = cfg.data.source == DEMONSTRATIONS
    if path is None or lr <= (HIGHEST_SFT_LR if sft else HIGHEST_PRETRAINED_LR):
        return None
    default = default_lr(path, cfg.data.source)
    usual = "SFT recipes use 1e-5 to 2e-4 (the top with LoRA)" if sft else "DPO recipes use 5e-7 to 5e-6"
    return (
        f"optim.lr={lr:g} trains model.path={path} at {lr / default:.0f}x the default "
        f"for a pretrained model ({default:g}); {usual}"
    )


def check_resume(resume: Any) -> None:
    """A checkpoint or run folder given as `resume` is found and checked before anything loads."""
    if resume is None or resume == "auto":
        return
    if not isinstance(resume, str):
        raise ConfigError(
            f"resume must be null, auto, or the path of a checkpoint or run folder, got {resume!r}"
        )
    locate_checkpoint(Path(resume))


def check_experiment(cfg: DictConfig, spec: LossSpec) -> None:
    """The built-in experiment's settings: its sections, its task, and keys its data replaces."""
    name = cfg.data.name
    if cfg.get("task") is None:
        raise ConfigError(
            f"task: data={name} samples its pairs on a task, and the config has none "
            "(for one run on generated pairs use data=synthetic)"
        )
    for section, (schema, _) in EXPERIMENT_SECTIONS.items():
        if schema is not None:
            check_schema(cfg[section], schema, section)
    for key in ("train_path", "validation_path", "dataset"):
        if cfg.data.get(key) is not None:
            raise ConfigError(
                f"data.{key}: data={name} samples its data from the SFT model, it reads no file or "
                "dataset (to train on yours use data=pairs or data=unpaired; a task's own problems "
                "are task.options)"
            )
    if cfg.data.get("options"):
        raise ConfigError(f"data.options: data={name} takes its options from `task`, not data.options")
    check_task(cfg.task)
    check_backend(cfg.sample, cfg.model)
    if cfg.sft.target_reward is not None and int(cfg.sft.check_every) <= 0:
        raise ConfigError(f"sft.check_every must be a positive number of steps, got {cfg.sft.check_every}")
    if int(cfg.online.rounds) < 1:
        raise ConfigError(f"online.rounds must be at least 1, got {cfg.online.rounds}")
    if cfg.online.reference == "previous" and not spec.needs_reference:
        raise ConfigError(f"online.reference: loss={spec.name} uses no reference model")


def check_fixed_data(cfg: DictConfig, changed: Sequence[str]) -> None:
    """A run on a fixed dataset refuses the experiment's settings: they could change nothing."""
    name = cfg.data.name
    if cfg.get("task") is not None:
        raise ConfigError(f"task: {EXPERIMENT_SECTIONS['task'][1]}; data={name} is a fixed dataset")
    scored = generation_eval_wanted(cfg)  # then `evaluate` keys are checked by what a fixed dataset reads
    if scored:
        check_schema(cfg.evaluate, EXPERIMENT_SECTIONS["evaluate"][0], "evaluate")
    refused = fixed_data_evaluate_refusals(cfg, changed) if scored else []
    for key in changed:
        section = key.split(".", 1)[0]
        if section == "evaluate" and scored:
            continue
        if section in EXPERIMENT_SECTIONS and section != "task":
            refused.append(
                f"{key}: data={name} is a fixed dataset; `{section}` {EXPERIMENT_SECTIONS[section][1]}"
            )
    if refused:
        raise ConfigError(
            "\n".join(refused)
            + "\n(these settings belong to the built-in experiment: data=arithmetic, data=gsm8k)"
        )
    if scored:
        check_generation_eval(cfg)


def check_unused_beta(spec: LossSpec, changed: Sequence[str]) -> None:
    if "beta" not in loss_hyperparameters(spec) and "beta" in changed:
        raise ConfigError(f"beta: loss={spec.name} has no beta (its options: see conf/loss/{spec.name}.yaml)")


def check_trainer(trainer_cfg: DictConfig) -> None:
    """`trainer` is passed to lightning.Trainer as it is: each key must be one of its arguments."""
    accepted = set(inspect.signature(L.Trainer.__init__).parameters)
    accepted -= {"self", "logger", "callbacks", "strategy"}  # set by the run, or by `strategy`
    for key in trainer_cfg:
        if key not in accepted:
            known = [f"trainer.{name}" for name in sorted(accepted)]
            hint = suggestion(f"trainer.{key}", known, trainer_cfg._get_node(key)._value())
            raise ConfigError(f"trainer.{key}: not an argument of lightning.Trainer{hint}")
