"""A built-in experiment task's settings: its split sizes, its problems function and its options, and
a function reward (a classifier reward is checked when it loads: a hub id cannot be checked offline)."""

from __future__ import annotations

import inspect

from omegaconf import DictConfig, OmegaConf

from dpo_exp.errors import ConfigError
from dpo_exp.models.reward import is_function
from dpo_exp.tasks import load_function


def check_task(task_cfg: DictConfig) -> None:
    """The splits' sizes, the problems function and its options, a function reward; a classifier
    reward is checked when it loads (a hub id cannot be checked offline)."""
    for split, size in task_cfg.splits.items():
        if int(size) <= 0:
            raise ConfigError(f"task.splits.{split} must be a positive integer")
    for key in ("problems", "reward"):
        if key == "reward" and not is_function(task_cfg.reward):
            continue
        try:
            load_function(task_cfg[key])
        except (ValueError, ImportError) as error:
            raise ConfigError(f"task.{key}: {error}") from error
    options = OmegaConf.to_container(task_cfg.options, resolve=True)
    try:
        inspect.signature(load_function(task_cfg.problems)).bind(1, **options)
    except TypeError as error:
        raise ConfigError(f"task.options: {task_cfg.problems} does not take them ({error})") from None
