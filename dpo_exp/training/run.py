"""`train(cfg, run_dir)`: one training run, from a validated config to its summary and export.

Every run goes through here: a preference run on the user's data, and each training stage of the
built-in experiment (which passes its data files and model path in `cfg`, and its evaluation as a
callback). This module reads config and files; it knows nothing of tasks, sampling or rounds.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig
from transformers import PreTrainedModel

from dpo_exp.console import stage
from dpo_exp.data.module import PreparedData, announce_data, prepare_data
from dpo_exp.devices import allow_tf32, compute_dtype, describe_device, run_precision
from dpo_exp.errors import ConfigError
from dpo_exp.losses import LossSpec, get_loss, loss_hyperparameters
from dpo_exp.models.loading import load_policy, load_reference, load_tokenizer
from dpo_exp.storage import write_json_atomically, write_text_atomically
from dpo_exp.training.alarms import LikelihoodDisplacementAlarm
from dpo_exp.training.build import (
    build_datamodule,
    build_module,
    build_trainer,
    resolve_loss_options,
    share_prompt_wanted,
)
from dpo_exp.training.checkpoints import checkpoint_callback
from dpo_exp.training.eval_logps import EvalLogpsWriter
from dpo_exp.training.export import EXPORT_DIR, export_policy, push_to_hub
from dpo_exp.training.first_validation import ValidationAtStart
from dpo_exp.training.flops import StepFlops
from dpo_exp.training.gradients import GradientTelemetry
from dpo_exp.training.guards import NonFiniteGuard
from dpo_exp.training.ranks import RankWatch
from dpo_exp.training.ref_cache import ReferenceCache, cache_wanted, data_fingerprint
from dpo_exp.training.ref_scoring import ReferenceScoring, open_cache, scoring_options
from dpo_exp.training.reference_sync import ReferenceSync
from dpo_exp.training.resume import (
    RESUME_ENV,
    check_resumed_data,
    exact_resume,
    resume_checkpoint,
    step_of,
    write_data_digest,
)
from dpo_exp.training.run_files import (
    FINISHED_IN,
    SUMMARY,
    config_hash,
    earlier_metrics,
    library_versions,
    resolved,
    write_failure,
    write_resolved_config,
    write_stopped,
)
from dpo_exp.training.schedule import Schedule, default_lr, plan_schedule, world_size_of
from dpo_exp.training.signals import StopCheckpoint, interrupt_as_terminate, stop_signal
from dpo_exp.training.telemetry import TokenThroughput
from dpo_exp.training.wandb_run import write_wandb_summary

# Set by Lightning's launcher in the launching process; left behind, the next sweep member in
# this process would take itself for a worker started by someone else and wait for its peers.
# The resume choice is passed to the processes it starts the same way, and cleared the same way.
DISTRIBUTED_ENVIRONMENT = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", RESUME_ENV)


def train(
    cfg: DictConfig,
    run_dir: Path,
    callbacks: list[L.Callback] | None = None,
    extra_summary: dict[str, Any] | None = None,
    *,
    validate_at_start: bool = True,
) -> dict[str, Any]:
    """Train one run into `run_dir`; return its summary (also written to summary.json at the end).

    `cfg` has been validated at the entry. `callbacks` join the trainer's; `extra_summary` is
    merged into the summary (the experiment's reference figures and stage folders). A run that
    starts afresh validates at step 0 too, unless `validate_at_start` is false.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    # `auto` becomes what fits the device before anything records the config (resume, cache keys).
    cfg.trainer.precision = run_precision(cfg.trainer.precision, cfg.strategy.accelerator)
    allow_tf32(cfg.strategy.accelerator, cfg.speed.tf32)
    launch_environment = {key: os.environ.get(key) for key in DISTRIBUTED_ENVIRONMENT}
    try:
        # Before anything is recorded: a folder refused here (finished, another config's) is left as it was.
        resume_from = resume_checkpoint(cfg.resume, run_dir, resolved(cfg))
        callbacks = [*(callbacks or []), *([ValidationAtStart()] if validate_at_start else [])]
        return train_recording_failure(cfg, run_dir, resume_from, callbacks, extra_summary or {})
    finally:
        finish_wandb_run()
        release_process_group(launch_environment)


def train_recording_failure(
    cfg: DictConfig,
    run_dir: Path,
    resume_from: Path | None,
    callbacks: list[L.Callback],
    extra_summary: dict[str, Any],
) -> dict[str, Any]:
    """`_train`, writing failed.txt if it fails; when a peer rank's process died, that is the error."""
    watch = RankWatch()
    try:
        return _train(cfg, run_dir, resume_from, [watch, *callbacks], extra_summary)
    except (SIGTERMException, KeyboardInterrupt) as stop:
        received = signal.SIGINT if isinstance(stop, KeyboardInterrupt) else stop_signal()
        write_stopped(run_dir, f"stopped by {received.name}; resumable (resume=auto)")
        raise
    except BaseException as error:
        lost = watch.lost_ranks(error)
        if lost is not None:
            lost.__cause__ = error  # failed.txt keeps this rank's own traceback beneath
        write_failure(run_dir, lost or error)
        if lost is not None:
            raise lost from error
        raise


def finish_wandb_run() -> None:
    """Close this run's W&B run, so the next sweep member in this process starts its own."""
    import wandb

    if wandb.run is not None:
        wandb.finish()


def release_process_group(launch_environment: dict[str, str | None]) -> None:
    """End this run's process group and restore the environment it was launched from."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    for key, value in launch_environment.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@dataclass
class RunParts:
    """What a run trains: its models, data, reference cache and the Lightning pieces around them."""

    spec: LossSpec
    tokenizer: Any
    data: PreparedData
    policy: PreTrainedModel
    reference: PreTrainedModel | None
    cache: ReferenceCache | None
    scoring: ReferenceScoring | None  # fills `cache` when training starts, where it was not on disk
    module: L.LightningModule
    datamodule: L.LightningDataModule
    loss_options: dict[str, Any]  # as the loss gets them: each `auto` one chosen from the data
    auto_loss_options: dict[str, dict[str, Any]]  # how each `auto` option was chosen


def assemble_run(cfg: DictConfig, data: PreparedData | None = None) -> RunParts:
    """Tokenizer, data, policy, reference (or its cached log-probs), module and data module.
    `data`, when given, is used as prepared (an evaluation's, which reads no training rows)."""
    spec = get_loss(cfg.loss.name)
    tokenizer = load_tokenizer(cfg.model)
    if data is None:
        data = prepare_data(cfg.data, tokenizer, paired=spec.paired)
        announce_data(data, str(cfg.data.name))
    options, auto_options = resolve_loss_options(cfg.loss, spec, data)
    policy = load_policy(cfg.model, tokenizer)
    cache, reference, scoring = None, None, None
    if cache_wanted(cfg.reference, spec):
        opened = open_cache(cfg, policy, tokenizer, data, paired=spec.paired)
        cache = opened.cache  # read now, or filled when training starts (ReferenceScoring)
        if not opened.found:
            how = scoring_options(cfg, tokenizer, paired=spec.paired)
            scoring = ReferenceScoring(opened, data, load_reference(cfg.model, policy), how)
    elif spec.needs_reference:
        reference = load_reference(cfg.model, policy)
    datamodule = build_datamodule(
        cfg,
        spec,
        data,
        tokenizer.pad_token_id,
        share_prompt=share_prompt_wanted(cfg, spec, policy, reference),
        ref_logps=None if cache is None else {"train": cache.train, "validation": cache.validation},
    )
    module = build_module(cfg, spec, policy, reference, options)
    return RunParts(
        spec, tokenizer, data, policy, reference, cache, scoring, module, datamodule, options, auto_options
    )


def run_callbacks(
    cfg: DictConfig, run_dir: Path, parts: RunParts, config: dict[str, Any], log_every: int
) -> list[L.Callback]:
    """Throughput, the non-finite guard, the displacement alarm, the gradient norm, the learning
    rate, checkpoints (recording `config`, and one when a stop signal arrives) and the eval
    log-prob writer."""
    flops = StepFlops.of(
        parts.policy, parts.reference, needs_reference=parts.spec.needs_reference, paired=parts.spec.paired
    )
    throughput = TokenThroughput(
        log_every,
        flops=flops,
        peak_flops=cfg.speed.peak_flops,
        compute_dtype=compute_dtype(cfg.trainer.precision, cfg.model.get("dtype")),
    )
    callbacks: list[L.Callback] = [
        throughput,
        NonFiniteGuard(cfg.nonfinite),
        LikelihoodDisplacementAlarm(parts.spec.name),
        GradientTelemetry(),  # after the guard, which clears a skipped step's gradients
        LearningRateMonitor(logging_interval="step"),
    ]
    if cfg.trainer.enable_checkpointing:
        every, keep = cfg.checkpoint.every_n_steps, cfg.checkpoint.keep_last
        checkpoint = checkpoint_callback(run_dir, every, keep, config)
        callbacks += [checkpoint, StopCheckpoint(checkpoint)]
    if cfg.save_eval_logps:
        callbacks.append(EvalLogpsWriter(run_dir))
    if parts.scoring is not None:
        callbacks.append(parts.scoring)
    if cfg.reference.sync_every is not None:
        callbacks.append(ReferenceSync(cfg.reference.sync_every, cfg.reference.sync_mix))
    return callbacks


def resume_metrics(run_dir: Path, resume_from: Path | None) -> list[dict[str, str]]:
    """The metrics rows a resumed run starts from: the continued run's, before its checkpoint's step."""
    if resume_from is None:
        return []
    stage("resume", f"resuming from {resume_from}")
    return earlier_metrics(run_dir, resume_from.parent.parent, before_step=step_of(resume_from))


def run_schedule(cfg: DictConfig, parts: RunParts) -> Schedule:
    """The run's budget and intervals in optimizer steps (`schedule.py`), on its training rows."""
    world_size = world_size_of(cfg.strategy)
    if world_size is None and cfg.trainer.get("max_epochs") is not None:
        raise ConfigError(
            f"trainer.max_epochs: strategy.devices={cfg.strategy.devices} leaves the number of processes "
            "to Lightning; set it to a number, which an epoch's step count depends on"
        )
    rows = len(parts.data.train.items)
    return plan_schedule(
        cfg.trainer, cfg.optim, rows=rows, batch_size=cfg.data.batch_size, world_size=world_size or 1
    )


def _train(
    cfg: DictConfig,
    run_dir: Path,
    resume_from: Path | None,
    callbacks: list[L.Callback],
    extra_summary: dict[str, Any],
) -> dict[str, Any]:
    start = time.perf_counter()
    config = resolved(cfg)
    write_resolved_config(cfg, run_dir)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    parts = assemble_run(cfg)
    earlier = record_data(run_dir, resume_from, parts.data)
    schedule = run_schedule(cfg, parts)
    stage("train", describe_run(cfg, parts, run_dir, schedule))
    own_callbacks = run_callbacks(cfg, run_dir, parts, config, schedule.log_every)
    trainer = build_trainer(cfg, run_dir, [*own_callbacks, *callbacks], schedule=schedule, earlier=earlier)
    with interrupt_as_terminate(), exact_resume():
        trainer.fit(parts.module, parts.datamodule, ckpt_path=resume_from, weights_only=True)
    if trainer.global_step % schedule.val_every != 0:
        trainer.validate(parts.module, parts.datamodule, verbose=False)
    throughput, guard, alarm, gradients = own_callbacks[:4]
    summary = {
        "run_name": cfg.run_name,
        "run_dir": str(run_dir),
        "loss": parts.spec.name,
        "beta": float(cfg.beta),
        "loss_options": parts.loss_options,
        **({"auto_loss_options": parts.auto_loss_options} if parts.auto_loss_options else {}),
        "seed": int(cfg.seed),
        "config_hash": config_hash(cfg),
        "global_step": trainer.global_step,
        "world_size": trainer.world_size,
        "num_nodes": trainer.num_nodes,
        **guard.figures(),
        "resumed_from": None if resume_from is None else str(resume_from),
        "metrics": {name: float(value) for name, value in sorted(trainer.callback_metrics.items())},
        "wall_time_s": time.perf_counter() - start,
        **throughput.figures(),
        **gradients.figures(),
        **fast_paths(parts),
        "step_zero": parts.module.step_zero,  # the step-0 invariant's figures; None when not checked
        "alarms": {"likelihood_displacement": alarm.fired},
        "data": {"train": vars(parts.data.train.report), "validation": vars(parts.data.validation.report)},
        "versions": library_versions(),
        **extra_summary,
    }
    if trainer.is_global_zero:
        finish_run(cfg, run_dir, parts, summary, trainer)
    return summary


def record_data(run_dir: Path, resume_from: Path | None, data: PreparedData) -> list[dict[str, str]]:
    """Keep the digest of the run's data in its folder; resuming, first refuse data other than the
    resumed run's, then return the metrics rows the run continues (`resume_metrics`)."""
    digest = {split: data_fingerprint(getattr(data, split).items) for split in ("train", "validation")}
    earlier = []
    if resume_from is not None:
        check_resumed_data(resume_from, digest)
        earlier = resume_metrics(run_dir, resume_from)
    write_data_digest(run_dir, digest)
    return earlier


def fast_paths(parts: RunParts) -> dict[str, bool]:
    """Which paths to the same numbers, only faster, this run took (each is off where it cannot run)."""
    return {
        "reference_cached": parts.cache is not None,
        "head_on_completions": bool(parts.module.head_on_completions),
        "shared_prompt": bool(parts.datamodule.share_prompt),
    }


def describe_run(cfg: DictConfig, parts: RunParts, run_dir: Path, schedule: Schedule) -> str:
    """`dpo (beta 2) on 1762 pairs, 400 steps; lr 1e-06 (default), warmup 40 steps, validation every
    40 steps, logged every step, batch 8; 0.44M trainable parameters, reference: frozen model; ... -> dir`."""
    spec, report = parts.spec, parts.data.train.report
    what = spec.name + (f" (beta {cfg.beta:g})" if "beta" in loss_hyperparameters(spec) else "")
    dropped = sum(report.dropped.values())
    dropped = f" ({dropped} dropped)" if dropped else ""
    unit = "pairs" if spec.paired else "examples"
    trainable = sum(p.numel() for p in parts.policy.parameters() if p.requires_grad)
    if not spec.needs_reference:
        reference = "none"
    elif parts.cache is not None:
        reference = "cached log-probs"
    else:
        adapter = (
            cfg.model.get("adapter_path") is not None and cfg.model.get("adapter_reference") == "adapter"
        )
        own = "the saved adapter, frozen" if adapter else "the policy's base, adapter off"
        reference = "frozen model" if parts.reference is not None else own
    lr = float(cfg.optim.lr)
    default = " (default)" if lr == default_lr(cfg.model.get("path"), cfg.data.source) else ""
    return (
        f"{what} on {report.rows_kept} {unit}{dropped}, {schedule.describe()}; lr {lr:g}{default}, "
        f"{schedule.intervals()}, batch {cfg.data.batch_size}; "
        f"{trainable / 1e6:.3g}M trainable parameters, reference: {reference}; "
        f"{describe_device(cfg.trainer.precision, cfg.strategy.accelerator, cfg.strategy.get('devices'))} "
        f"-> {run_dir}"
    )


def finish_run(
    cfg: DictConfig, run_dir: Path, parts: RunParts, summary: dict[str, Any], trainer: L.Trainer
) -> None:
    """Export the policy (as configured), then write summary.json (the mark of a finished run) and
    the W&B run's summary."""
    if cfg.export.save and parts.module.device_mesh is not None:
        stage("export", "skipped: the policy is sharded (FSDP); export from a single-process run")
    elif cfg.export.save:
        summary["export_dir"] = str(run_dir / EXPORT_DIR)
        export_policy(parts.module.policy, parts.tokenizer, run_dir / EXPORT_DIR, cfg=cfg, summary=summary)
        stage("export", f"{run_dir / EXPORT_DIR}")
    summary.update(wandb_location(trainer, online=bool(cfg.logger.get("online"))))
    write_json_atomically(summary, run_dir / SUMMARY)
    write_wandb_summary(trainer.loggers, summary)
    if cfg.export.save and cfg.export.get("push_to_hub") and trainer.is_global_zero:
        stage("export", f"pushed to {push_to_hub(run_dir / EXPORT_DIR, str(cfg.export.push_to_hub))}")
    continued = None if summary["resumed_from"] is None else Path(summary["resumed_from"]).parent.parent
    if continued is not None and continued != run_dir and not (continued / SUMMARY).exists():
        write_text_atomically(continued / FINISHED_IN, f"{run_dir}\n")  # never continued again


def wandb_location(trainer: L.Trainer, *, online: bool) -> dict[str, Any]:
    """Where this run's W&B run is written (its folder), when it has one."""
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            return {"wandb_run_dir": str(Path(logger.experiment.dir).parent), "wandb_online": online}
    return {}
