"""A run's W&B record (`logger=wandb`): the settings that apply, once each; the sweep's name as its
group; loss, β, model and data as tags; the best validation figures beside the last in its summary.

Offline (the default) the run is `<run folder>/wandb/offline-run-*`: `wandb sync` uploads it, and
`wandb leet` reads it on this machine.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.loggers import Logger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from dpo_exp.console import log
from dpo_exp.losses import takes_beta
from dpo_exp.training.settings_in_use import unused_settings

# Set when a multirun starts (`dpo_exp.config.naming.SweepNaming`): the keys its sweep varies,
# comma-separated. An environment variable, so launchers that run members in other processes
# (joblib) pass it on.
SWEPT_KEYS = "DPO_EXP_SWEPT_KEYS"

# The built-in experiment's sections (`dpo_exp.config.schema.EXPERIMENT_SECTIONS`): a run on a
# fixed dataset carries their defaults but reads none of them.
EXPERIMENT_KEYS = ("task", "sft", "sample", "evaluate", "online", "cache_dir")

# Keys W&B shows as the run's own fields (name, project, group, tags), not as config columns.
RUN_FIELDS = ("run_name", "logger")

# Validation figures whose best value matters as much as the last: a run that peaks and then
# overfits shows both. W&B keeps `{"min" or "max": best, "last": last}` in the run's summary.
BEST_VALUES = {
    "val/loss": "min,last",
    "val/rewards/accuracy": "max,last",
    "eval/true_reward": "max,last",  # the built-in experiment's verifier
}


def flatten(tree: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested config -> ("a.b.c", value) pairs, so every override is a filterable W&B column."""
    if not isinstance(tree, dict):
        return [(prefix, tree)]
    return [
        pair
        for key, value in tree.items()
        for pair in flatten(value, f"{prefix}.{key}" if prefix else str(key))
    ]


def wandb_config(cfg: DictConfig) -> dict[str, Any]:
    """The settings the run reads, one column each: not the built-in experiment's sections on a
    fixed dataset (a run of the experiment has `task`; `evaluate` stays where `evaluate.reward`
    scores generations), not `beta` for a loss without one, not a setting another one switches off
    (`settings_in_use`: the reference's for a reference-free loss, `optim.warmup_ratio` beside
    `optim.warmup_steps`, ...), not the run's name and logger, which W&B shows as the run's own fields."""
    dropped = set(RUN_FIELDS)
    if cfg.get("task") is None:
        dropped |= set(EXPERIMENT_KEYS) - ({"evaluate"} if cfg.evaluate.get("reward") else set())
    if not takes_beta(str(cfg.loss.name)):
        dropped.add("beta")
    unused = tuple(prefix for prefix, _ in unused_settings(cfg))
    tree = OmegaConf.to_container(cfg, resolve=True)
    pairs = flatten({key: value for key, value in tree.items() if key not in dropped})
    return {key: value for key, value in pairs if not key.startswith(unused)}


def wandb_tags(cfg: DictConfig) -> list[str]:
    """Loss, β (where the loss has one), model and data, then the user's `logger.tags`."""
    beta = [f"beta:{cfg.beta}"] if takes_beta(str(cfg.loss.name)) else []
    return [
        f"loss:{cfg.loss.name}",
        *beta,
        f"model:{cfg.model.name}",
        f"data:{cfg.data.name}",
        *cfg.logger.tags,
    ]


def sweep_name(config_name: str, swept: list[str]) -> str:
    """A named sweep's file name (`beta_grid`); a command-line sweep of the root config is named by
    the keys it varies (`sweep_loss_beta`). Launches of one sweep share the name, so W&B groups
    them; the sweep folder's name is a time."""
    if config_name != "config" or not swept:
        return config_name
    return "sweep_" + "_".join(swept)


def wandb_group(group: str | None) -> str | None:
    """`logger.group` when set; else the sweep's name for a multirun member; else none."""
    if group or not HydraConfig.initialized():
        return group
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    swept = [key for key in os.environ.get(SWEPT_KEYS, "").split(",") if key]
    return sweep_name(str(hydra_cfg.job.config_name), swept)


class RunWandbLogger(WandbLogger):
    """Lightning's W&B logger, given the run's settings whole at the start (`wandb_config`)."""

    @rank_zero_only
    def log_hyperparams(self, params: Mapping[str, Any] | Any) -> None:
        """Lightning passes the module's hyperparameters here once training starts. They repeat the
        config's settings under other names (`loss` beside `loss.name`), so they are not logged;
        only the loss options chosen at the start (`auto`) replace what the config said."""
        config = self.experiment.config
        options = dict(params).get("loss_options") or {}
        chosen = {
            f"loss.{name}": value
            for name, value in options.items()
            if f"loss.{name}" in config and config[f"loss.{name}"] != value
        }
        if chosen:
            config.update(chosen, allow_val_change=True)
        for name, summary in BEST_VALUES.items():
            self.experiment.define_metric(name, summary=summary)


def build_wandb_logger(cfg: DictConfig, run_dir: Path) -> Logger:
    """The run's W&B logger; offline unless `logger.online`, its files under `run_dir`."""
    if not cfg.logger.online:
        # The mode must be in the environment before wandb starts its service process.
        os.environ["WANDB_MODE"] = "offline"
    import wandb

    # wandb's own notices (three at the start, a 35-line summary at the end) only with
    # verbosity=verbose; the result block names the W&B run folder, its debug.log keeps the rest.
    quiet = not log.isEnabledFor(logging.DEBUG)
    logger = RunWandbLogger(
        project=cfg.logger.project,
        entity=cfg.logger.entity,
        name=cfg.run_name,
        group=wandb_group(cfg.logger.group),
        tags=wandb_tags(cfg),
        save_dir=str(run_dir),
        offline=not cfg.logger.online,
        config=wandb_config(cfg),
        settings=wandb.Settings(quiet=quiet, silent=quiet),
    )
    # Lightning always passes `anonymous`, which wandb 0.31 warns "has no effect".
    logger._wandb_init.pop("anonymous", None)
    return logger


def write_wandb_summary(loggers: list[Logger], summary: dict[str, Any]) -> None:
    """The run's summary.json figures as its W&B summary: final metrics, the reference's, speed.
    A figure in `BEST_VALUES` is left as W&B summarised it: its last value is there, beside its best."""
    figures = {name: value for name, value in summary.get("metrics", {}).items() if name not in BEST_VALUES}
    figures.update({f"reference/{name}": value for name, value in summary.get("reference", {}).items()})
    for when in ("step0", "final"):  # generation-scored figures (`evaluate.reward`), first and last
        entry = (summary.get("generation") or {}).get(when, {})
        figures.update({f"generation/{when}/{name}": value for name, value in entry.items()})
    for key in ("global_step", "wall_time_s", "tokens_per_s", "padding_fraction", "peak_memory_gb", "mfu"):
        if isinstance(summary.get(key), int | float):
            figures[key] = summary[key]
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.experiment.summary.update(figures)
