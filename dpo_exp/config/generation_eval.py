"""Which `evaluate` keys a run reads: the built-in experiment's, or a fixed dataset's generation-scored
evaluation (`evaluate.reward` set), and the values the latter needs.

On a fixed dataset without `evaluate.reward` the whole section is refused (`check_fixed_data`); with
it, the keys in `FIXED_DATA_EVALUATE_KEYS` take effect and the rest are refused here, naming why.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from omegaconf import DictConfig

from dpo_exp.config.schema import FIXED_DATA_EVALUATE_KEYS, FIXED_DATA_ONLY_EVALUATE_KEYS
from dpo_exp.errors import ConfigError

SHARDED_STRATEGY = "ModelParallelStrategy"


def generation_eval_wanted(cfg: DictConfig) -> bool:
    """Whether a run on a fixed dataset samples and scores completions (`evaluate.reward` is set)."""
    return cfg.get("evaluate") is not None and cfg.evaluate.get("reward") is not None


def fixed_data_evaluate_refusals(cfg: DictConfig, changed: Sequence[str]) -> list[str]:
    """With `evaluate.reward`, the `evaluate` keys a fixed dataset does not read, each with why."""
    name = cfg.data.name
    refused = []
    for key in changed:
        section, _, leaf = key.partition(".")
        if section == "evaluate" and leaf.split(".")[0] not in FIXED_DATA_EVALUATE_KEYS:
            refused.append(
                f"{key}: data={name} is a fixed dataset; its evaluation prompts are its validation split's "
                "(the first evaluate.prompts distinct ones), not the built-in experiment's eval or tune set"
            )
    return refused


def check_experiment_evaluate_keys(cfg: DictConfig, changed: Sequence[str]) -> None:
    """The built-in experiment samples its task's prompts at its task's length and temperature 1."""
    where = {
        "prompts": "task.splits.eval (or tune, by evaluate.split)",
        "temperature": "temperature 1 (the policy's own distribution)",
        "max_new_tokens": "task.max_new_tokens",
    }
    refused = [
        f"evaluate.{leaf}: data={cfg.data.name} evaluates on its task's prompts with {where[leaf]}; "
        f"evaluate.{leaf} is read only on a fixed dataset (with evaluate.reward)"
        for leaf in FIXED_DATA_ONLY_EVALUATE_KEYS
        if f"evaluate.{leaf}" in changed
    ]
    if refused:
        raise ConfigError("\n".join(refused))


def check_generation_eval(cfg: DictConfig) -> None:
    """The values a fixed dataset's generation-scored evaluation needs, and a strategy it runs under."""
    evaluate = cfg.evaluate
    for key in ("prompts", "max_new_tokens", "batch_size", "table_size"):
        check_count(evaluate[key], f"evaluate.{key}", minimum=1)
    check_count(evaluate.table_every, "evaluate.table_every", minimum=0, hint=" (0: no sample tables)")
    if isinstance(evaluate.seed, bool) or not isinstance(evaluate.seed, int):
        raise ConfigError(f"evaluate.seed must be an integer, got {evaluate.seed!r}")
    temperature = evaluate.temperature
    if isinstance(temperature, bool) or not isinstance(temperature, int | float):
        raise ConfigError(f"evaluate.temperature must be a number, got {temperature!r}")
    if not math.isfinite(temperature) or temperature <= 0:
        raise ConfigError(f"evaluate.temperature must be a finite number > 0, got {temperature!r}")
    strategy = cfg.strategy.get("strategy")
    target = str(strategy.get("_target_", "")) if isinstance(strategy, DictConfig) else str(strategy)
    if target.endswith(SHARDED_STRATEGY) or target == "fsdp":
        raise ConfigError(
            "evaluate.reward: strategy=fsdp shards the policy, and sampling "
            "from a sharded policy is not supported; evaluate with strategy=single or ddp"
        )


def check_count(value: Any, key: str, *, minimum: int, hint: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ConfigError(f"{key} must be {kind}, got {value!r}{hint}")
