"""How long a run trains, and how often it warms up, validates and logs, in optimizer steps.

`trainer.max_steps` is the budget unless `trainer.max_epochs` is set, which replaces it with that
many passes over the training data. An optimizer step takes `trainer.accumulate_grad_batches`
batches of `data.batch_size` on every process, and an epoch is every complete global batch once
(`data.sampling.GlobalBatchSampler` drops the last, incomplete one). Intervals left null are
chosen from the budget, so that a run of a few dozen steps still draws curves.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dpo_exp.data.demonstrations import DEMONSTRATIONS

# optim.lr's default (conf/config.yaml, `${dpo_exp.default_lr:${model.path},${data.source}}`): a
# model loaded from weights trains at the rate DPO recipes use (TRL's DPOConfig default; the DPO
# paper's 5e-7 to 1e-6); a model built from its config starts from random weights and needs a
# pretraining-size rate.
PRETRAINED_LR = 1e-6
BUILT_LR = 5e-4
# A loaded model fine-tuned on demonstrations (data=demonstrations, `dpo-exp sft`) trains at SFT's
# usual rate: TRL's SFTConfig default, 20 times DPO's.
SFT_PRETRAINED_LR = 2e-5
HIGHEST_SFT_LR = 1e-3  # above LoRA SFT's usual 2e-4
# A loaded model trained faster than this is far outside what preference fine-tuning uses.
HIGHEST_PRETRAINED_LR = 1e-4
# Null intervals: about this many validations a run, and every step logged up to this many points.
VALIDATIONS = 10
LOG_POINTS = 200


def default_lr(model_path: Any, data_source: Any = None) -> float:
    """optim.lr's default for a model loaded from `model_path`, or built from its config (None),
    trained on data of `data_source` (`${data.source}`): SFT's rate on demonstrations, else DPO's."""
    if model_path is None:
        return BUILT_LR
    return SFT_PRETRAINED_LR if data_source == DEMONSTRATIONS else PRETRAINED_LR


def warmup_steps(optim: Mapping[str, Any], steps: int) -> int:
    """`optim.warmup_steps` when set, else `optim.warmup_ratio` of the run's `steps`."""
    if optim.get("warmup_steps") is not None:
        return int(optim["warmup_steps"])
    return round(float(optim.get("warmup_ratio") or 0.0) * steps)


def steps_per_epoch(rows: int, batch_size: int, world_size: int, accumulate: int) -> int:
    """Optimizer steps in one pass over `rows` training rows: Lightning steps on the batches an
    epoch leaves over from its last full accumulation too."""
    return math.ceil(rows // (batch_size * world_size) / accumulate)


@dataclass(frozen=True)
class Schedule:
    steps: int  # the budget, in optimizer steps
    val_every: int  # optimizer steps between validations
    log_every: int  # optimizer steps between logged rows
    warmup: int  # optimizer steps of warmup
    accumulate: int  # batches an optimizer step takes
    epochs: int | None = None  # the budget as set, when given in epochs
    epoch_steps: int | None = None  # optimizer steps an epoch takes, when given in epochs

    def describe(self) -> str:
        """`300 steps` or `2 epochs = 90 steps (45 a pass)`."""
        if self.epochs is None:
            return f"{self.steps} steps"
        plural = "s" if self.epochs != 1 else ""
        return f"{self.epochs} epoch{plural} = {self.steps} steps ({self.epoch_steps} a pass)"

    def intervals(self) -> str:
        """`warmup 30 steps, validation every 30 steps and at step 0, logged every step`."""
        logged = "every step" if self.log_every == 1 else f"every {self.log_every} steps"
        return f"warmup {self.warmup} steps, validation every {self.val_every} steps, logged {logged}"


def plan_schedule(
    trainer_cfg: Mapping[str, Any],
    optim_cfg: Mapping[str, Any],
    *,
    rows: int,
    batch_size: int,
    world_size: int,
) -> Schedule:
    """The run's schedule from its trainer and optim settings and its training data's size."""
    accumulate = int(trainer_cfg.get("accumulate_grad_batches") or 1)
    epochs = trainer_cfg.get("max_epochs")
    epoch_steps = None
    if epochs is not None:
        epoch_steps = steps_per_epoch(rows, batch_size, world_size, accumulate)
        steps = int(epochs) * epoch_steps
    else:
        steps = int(trainer_cfg["max_steps"])
    val_every = trainer_cfg.get("val_check_interval") or max(1, math.ceil(steps / VALIDATIONS))
    log_every = trainer_cfg.get("log_every_n_steps") or max(1, steps // LOG_POINTS)
    return Schedule(
        steps=steps,
        val_every=int(val_every),
        log_every=int(log_every),
        warmup=warmup_steps(optim_cfg, steps),
        accumulate=accumulate,
        epochs=None if epochs is None else int(epochs),
        epoch_steps=epoch_steps,
    )


def trainer_arguments(trainer_cfg: Mapping[str, Any], schedule: Schedule) -> dict[str, Any]:
    """lightning.Trainer's arguments: the config's, the budget and intervals as the schedule has them.

    Lightning counts `val_check_interval` in batches; the schedule counts optimizer steps.
    """
    arguments = dict(trainer_cfg)
    arguments.pop("max_epochs", None)  # the budget is max_steps; Lightning then runs across epochs
    arguments.update(
        max_steps=schedule.steps,
        val_check_interval=schedule.val_every * schedule.accumulate,
        log_every_n_steps=schedule.log_every,
    )
    return arguments


def world_size_of(strategy_cfg: Mapping[str, Any]) -> int | None:
    """Processes the strategy asks for (`devices` × `num_nodes`), or None when Lightning chooses."""
    devices, nodes = strategy_cfg.get("devices"), int(strategy_cfg.get("num_nodes") or 1)
    if isinstance(devices, int) and not isinstance(devices, bool) and devices > 0:
        return devices * nodes
    if not isinstance(devices, str) and hasattr(devices, "__len__"):  # a list of device ids
        return len(devices) * nodes
    return None
