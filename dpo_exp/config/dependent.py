"""Settings that only mean something when another setting enables them, refused where they would
do nothing (`check_dependent_keys`), wherever a launch set them. Which they are is the training
run's knowledge (`dpo_exp.training.settings_in_use`)."""

from __future__ import annotations

from collections.abc import Sequence

from omegaconf import DictConfig

from dpo_exp.errors import ConfigError
from dpo_exp.training.settings_in_use import DEPENDENT_KEYS, validation_is_read

__all__ = ["check_dependent_keys", "validation_is_read"]


def check_dependent_keys(cfg: DictConfig, changed: Sequence[str]) -> None:
    for key in changed:
        for prefix, used, reason in DEPENDENT_KEYS:
            if key.startswith(prefix) and not used(cfg):
                raise ConfigError(f"{key}: has no effect: {reason.format(loss=cfg.loss.name)}")
