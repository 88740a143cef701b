"""The parts of a training run, built from its config: loggers, trainer, data module, module.

`train()` and the tests assemble runs through these functions, so a test exercises the batches,
the module and the trainer settings the CLI uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf
from transformers import PreTrainedModel

from dpo_exp.console import stage
from dpo_exp.data.module import PreferenceDataModule, PreparedData
from dpo_exp.errors import ConfigError, DataError
from dpo_exp.losses import LossSpec, kto_desirable_weight, loss_inputs, needs_scores
from dpo_exp.models.scoring import shared_prompt_supported
from dpo_exp.training.invariants import starts_from_reference
from dpo_exp.training.metrics_file import MetricsLogger
from dpo_exp.training.module import PreferenceModule
from dpo_exp.training.progress import StepProgressBar
from dpo_exp.training.ranks import launch_patiently
from dpo_exp.training.schedule import Schedule, trainer_arguments
from dpo_exp.training.wandb_run import build_wandb_logger


def loss_options(loss_cfg: DictConfig) -> dict[str, Any]:
    """The loss's keyword hyperparameters from its YAML (everything but its name)."""
    options = OmegaConf.to_container(loss_cfg, resolve=True)
    options.pop("name")
    return options


def resolve_loss_options(
    loss_cfg: DictConfig, spec: LossSpec, data: PreparedData
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the loss's options with each `auto` one chosen from the training data, how each was chosen).

    Computed once, where the run starts, on the training examples left after tokenisation; the
    choice is printed, recorded in summary.json (`auto_loss_options`) and, as the module's
    hyperparameters, in hparams.yaml. A number given by the user is used unchanged.
    """
    check_loss_data(spec, data)
    options = loss_options(loss_cfg)
    chosen = {}
    for name in spec.auto_options:
        if options.get(name) == "auto":
            chosen[name] = AUTO_OPTIONS[name](spec, options, data)
            options[name] = chosen[name]["value"]
    return options, chosen


def check_loss_data(spec: LossSpec, data: PreparedData) -> None:
    """A loss that takes the data's rewards needs them in both splits; the data's pair weights
    need a loss whose per-example losses belong to pairs (not aot's sorted ones)."""
    for split, prepared in (("train", data.train), ("validation", data.validation)):
        pairs = [item.record for item in prepared.items]
        if needs_scores(spec) and not all(getattr(pair, "scores", None) is not None for pair in pairs):
            raise DataError(
                f"loss={spec.name} takes each response's reward, and the {split} data "
                f"({prepared.report.source}) has none: give every row score_chosen and score_rejected "
                "(or name the columns with data.options.chosen_score_field / rejected_score_field)"
            )
        if spec.sorts_batch and any(getattr(pair, "weight", None) is not None for pair in pairs):
            raise DataError(
                f"loss={spec.name} sorts the batch's margins, so its losses belong to no pair, and the "
                f"{split} data ({prepared.report.source}) weighs pairs: drop its weight column, "
                "or pick another loss"
            )


def auto_desirable_weight(spec: LossSpec, options: dict[str, Any], data: PreparedData) -> dict[str, Any]:
    """KTO's desirable weight by its paper's rule (`kto_desirable_weight`) on the training counts."""
    flags = [item.record.desirable for item in data.train.items]  # unpaired examples (kto)
    n_desirable, n_undesirable = sum(flags), len(flags) - sum(flags)
    undesirable_weight = float(options.get("undesirable_weight", 1.0))
    try:
        weight = kto_desirable_weight(n_desirable, n_undesirable, undesirable_weight=undesirable_weight)
    except ValueError as error:
        raise ConfigError(
            f"loss.desirable_weight=auto: {error}; set loss.desirable_weight to a number"
        ) from None
    before = n_desirable / (undesirable_weight * n_undesirable)
    stage(
        "loss",
        f"{spec.name} desirable_weight auto = {weight:.3g} (n_D {n_desirable}, n_U {n_undesirable}: "
        f"w_D*n_D / (w_U*n_U) = {before:.3g} -> {weight * before:.3g})",
    )
    return {
        "value": weight,
        "n_desirable": n_desirable,
        "n_undesirable": n_undesirable,
        "ratio": weight * before,  # lambda_D * n_D / (lambda_U * n_U), in [1, 4/3]
    }


# Loss options that may be `auto` (a loss lists them in `LossSpec.auto_options`) -> how each is chosen.
AUTO_OPTIONS = {"desirable_weight": auto_desirable_weight}


def build_loggers(cfg: DictConfig, run_dir: Path, earlier: Sequence[dict[str, Any]] = ()) -> list[Logger]:
    """A CSV of metrics always (written whole at each save, from the `earlier` rows of the run a
    resumed run continues); W&B as well with `logger=wandb`."""
    loggers: list[Logger] = [MetricsLogger(run_dir, earlier)]
    if cfg.logger.name == "wandb":
        loggers.append(build_wandb_logger(cfg, run_dir))
    return loggers


def build_trainer(
    cfg: DictConfig,
    run_dir: Path,
    callbacks: list[L.Callback],
    *,
    schedule: Schedule,
    earlier: Sequence[dict[str, Any]] = (),
) -> L.Trainer:
    """lightning.Trainer with `cfg.trainer`'s arguments, the budget and intervals as `schedule` has them."""
    trainer_args = trainer_arguments(OmegaConf.to_container(cfg.trainer, resolve=True), schedule)
    strategy_args = instantiate(cfg.strategy, _convert_="all")  # `strategy` may be a Lightning object
    if cfg.trainer.enable_progress_bar:
        callbacks = [*callbacks, StepProgressBar("train")]
    trainer = L.Trainer(
        **trainer_args,
        **strategy_args,
        default_root_dir=str(run_dir),
        logger=build_loggers(cfg, run_dir, earlier),
        callbacks=callbacks,
    )
    launch_patiently(trainer)
    return trainer


def build_module(
    cfg: DictConfig,
    spec: LossSpec,
    policy: PreTrainedModel,
    reference: PreTrainedModel | None,
    options: dict[str, Any],
) -> PreferenceModule:
    """The LightningModule of a run, from its config, its loaded models and its loss options
    (`resolve_loss_options`: the config's, each `auto` one chosen)."""
    return PreferenceModule(
        policy,
        reference,
        loss=spec.name,
        beta=float(cfg.beta),
        loss_options=options,
        optim=OmegaConf.to_container(cfg.optim, resolve=True),
        head_on_completions=bool(cfg.speed.head_on_completions),
        logits_chunk=cfg.speed.logits_chunk,
        check_step_zero=starts_from_reference(cfg.model, needs_reference=spec.needs_reference),
        moving_reference=cfg.reference.sync_every is not None,
    )


def share_prompt_wanted(
    cfg: DictConfig, spec: LossSpec, policy: PreTrainedModel, reference: PreTrainedModel | None
) -> bool:
    """Prompt ‖ chosen ‖ rejected rows when asked for, the data is paired and the models allow it."""
    models = [model for model in (policy, reference) if model is not None]
    return bool(cfg.speed.share_prompt) and spec.paired and all(map(shared_prompt_supported, models))


def build_datamodule(
    cfg: DictConfig,
    spec: LossSpec,
    data: PreparedData,
    pad_id: int,
    *,
    share_prompt: bool,
    ref_logps: dict[str, Any] | None = None,
) -> PreferenceDataModule:
    """The run's batches: global batches sharded per process, length-grouped, maybe shared-prompt."""
    return PreferenceDataModule(
        data,
        paired=spec.paired,
        pad_id=pad_id,
        batch_size=cfg.data.batch_size,
        eval_batch_size=cfg.data.eval_batch_size,
        seed=cfg.seed,
        shuffle=cfg.data.shuffle,
        group_by_length=bool(cfg.speed.group_by_length),
        ref_logps=ref_logps,
        mismatched_rows="kl_baseline" in loss_inputs(spec),  # KTO's reference point; RFT and BCO run none
        share_prompt=share_prompt,
        pack=share_prompt and bool(cfg.speed.pack),
    )
