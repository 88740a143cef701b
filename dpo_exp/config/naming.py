"""Names of run and sweep-member folders, derived from what runs, and the config's resolvers.

`run_name` (conf/config.yaml: `${dpo_exp.run_name:}`) is loss, online rounds when there are more
than one, model, data, β where the loss has one, and seed: `dpo_tiny_arithmetic_beta2.0_seed0`,
`rft_tiny_gsm8k_seed0`, `dpo_online2_tiny_arithmetic_beta2.0_seed0`. A sweep member's folder is its
number and the values of the keys its sweep varies: `3_loss=ipo,beta=0.5`. A run folder is
`<time>-<config hash>`, made when Hydra first resolves its name, with `-2`, `-3`, ... when taken.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from dpo_exp.console import library_level, project_level
from dpo_exp.data.demonstrations import DEMONSTRATIONS
from dpo_exp.data.module import data_label
from dpo_exp.devices import run_precision
from dpo_exp.losses import takes_beta
from dpo_exp.models.loading import model_label
from dpo_exp.training.run_files import new_folder
from dpo_exp.training.schedule import default_lr
from dpo_exp.training.wandb_run import SWEPT_KEYS  # set by `SweepNaming`, read by W&B's group too
from dpo_exp.world import agreed


def run_name(cfg: DictConfig) -> str:
    """The human-readable part of a run folder's name."""
    # Fine-tuning on demonstrations is SFT, whatever loss computes it (rft: the completions' NLL).
    parts = ["sft" if cfg.data.get("source") == DEMONSTRATIONS else str(cfg.loss.name)]
    online = cfg.get("online")
    if online is not None and int(online.rounds) > 1:
        parts.append(f"online{online.rounds}" + ("-previous" if online.reference == "previous" else ""))
    parts += [model_label(cfg.model), data_label(cfg.data)]
    if takes_beta(str(cfg.loss.name)):
        parts.append(f"beta{cfg.beta}")
    parts.append(f"seed{cfg.seed}")
    return safe("_".join(parts))


def safe(name: str) -> str:
    """A folder name: no path separators or spaces."""
    return re.sub(r"[/\\\s]+", "-", name)


def swept_keys(overrides: list[str], sweeper_params: dict[str, Any] | None) -> list[str]:
    """The keys a multirun varies: sweep overrides on its command line and `hydra.sweeper.params`."""
    parser = OverridesParser.create()
    keys = [o.key_or_group for o in parser.parse_overrides(overrides) if o.is_sweep_override()]
    keys += [str(key) for key in (sweeper_params or {})]
    return list(dict.fromkeys(key for key in keys if not key.startswith("hydra.")))


def sweep_member(task_overrides: list[str], fallback: str) -> str:
    """`key=value,...` of this member's overrides of the swept keys (`fallback` when none is known)."""
    keys = [key for key in os.environ.get(SWEPT_KEYS, "").split(",") if key]
    parser = OverridesParser.create()
    chosen = [o for o in parser.parse_overrides(list(task_overrides)) if o.key_or_group in keys]
    chosen.sort(key=lambda o: keys.index(o.key_or_group))
    values = [f"{o.key_or_group}={o.value()}" for o in chosen]
    return safe(",".join(values)) if values else fallback


class SweepNaming(Callback):
    """Hydra callback: note the keys a multirun varies, so its members' folders can be named by them."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        params = config.hydra.sweeper.get("params")
        keys = swept_keys(list(config.hydra.overrides.task), dict(params) if params else None)
        os.environ[SWEPT_KEYS] = ",".join(keys)


# The folders `new_run_folder` made in this process, by the name asked for.
MADE_FOLDERS: dict[str, str] = {}


def new_run_folder(base: str) -> str:
    """`${dpo_exp.new_folder:<path>}`, the default run folder: `<path>`, or `<path>-2`, ... when a
    launch in the same second took it, made now; the same answer each time Hydra resolves it here.
    Under a cluster launcher, rank 0's folder on every rank (each rank's `<path>` has its own time).

    A folder that cannot be made is answered as asked: the output-folder check then names why.
    """
    if base not in MADE_FOLDERS:
        MADE_FOLDERS[base] = agreed("run_folder", lambda: make_folder(base))
    return MADE_FOLDERS[base]


def make_folder(base: str) -> str:
    try:
        return str(new_folder(Path(base)))
    except OSError:
        return base


def register_resolvers() -> None:
    """The resolvers conf/ uses: run and member names, the run folder, the levels of `verbosity`,
    the precision that fits the device, the learning rate that fits the model."""
    resolvers = {
        "dpo_exp.run_name": lambda *, _root_: run_name(_root_),
        "dpo_exp.new_folder": new_run_folder,
        "dpo_exp.sweep_member": lambda overrides, fallback: sweep_member(list(overrides), fallback),
        "dpo_exp.log_level": project_level,
        "dpo_exp.library_level": library_level,
        "dpo_exp.precision": run_precision,
        "dpo_exp.default_lr": default_lr,
    }
    for name, resolver in resolvers.items():
        OmegaConf.register_new_resolver(name, resolver, replace=True)
