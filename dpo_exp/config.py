"""Checks on the composed config that run before any data is read or model is loaded."""

from __future__ import annotations

import math
import os
from typing import Any

from omegaconf import DictConfig, OmegaConf

from dpo_exp.data.sources import get_source
from dpo_exp.guards import ACTIONS as NONFINITE_ACTIONS
from dpo_exp.losses import LossSpec, get_loss, loss_hyperparameters
from dpo_exp.model_config import check_model_config


class ConfigError(ValueError):
    """A config value that cannot work, named by its dotted key."""


def validate_config(cfg: DictConfig) -> LossSpec:
    """Fail fast, with the key at fault, on settings that would fail later; return the loss spec."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"required values are not set: {', '.join(missing)} (set them on the command line)")
    check_positive_number(cfg.beta, "beta")
    spec = get_loss(cfg.loss.name)
    check_loss_options(cfg.loss, spec)
    check_data(cfg.data)
    check_model_config(cfg)
    check_positive_number(cfg.optim.lr, "optim.lr")
    if cfg.nonfinite not in NONFINITE_ACTIONS:
        raise ConfigError(f"nonfinite must be one of {', '.join(NONFINITE_ACTIONS)}, got {cfg.nonfinite!r}")
    if not isinstance(cfg.seed, int) or isinstance(cfg.seed, bool):
        raise ConfigError(f"seed must be an integer, got {cfg.seed!r}")
    return spec


def check_positive_number(value: Any, key: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{key} must be a number, got {value!r} ({type(value).__name__})")
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{key} must be a finite number > 0, got {value!r}")


def loss_options(loss_cfg: DictConfig) -> dict[str, Any]:
    """The loss's keyword hyperparameters from its YAML (everything but its name)."""
    options = OmegaConf.to_container(loss_cfg, resolve=True)
    options.pop("name")
    return options


def check_loss_options(loss_cfg: DictConfig, spec: LossSpec) -> None:
    accepted = set(loss_hyperparameters(spec)) - {"beta"}
    for option in loss_options(loss_cfg):
        if option == "beta":
            raise ConfigError("beta is set at the top level (`beta=0.1`), not under loss")
        if option not in accepted:
            valid = ", ".join(sorted(accepted)) or "none"
            raise ConfigError(f"loss '{spec.name}' has no option '{option}'; its options: {valid}")


def check_data(data_cfg: DictConfig) -> None:
    get_source(data_cfg.source)
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
