"""Entry points: `run(cfg, run_dir)` trains one run; `main` wraps it in Hydra; `dpo-exp` dispatches."""

from __future__ import annotations

import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from omegaconf import DictConfig, OmegaConf
from transformers import PreTrainedModel

from dpo_exp.checkpoints import check_checkpoint, checkpoint_callback, find_resume_checkpoint
from dpo_exp.config import loss_options, validate_config
from dpo_exp.data.module import PreferenceDataModule, prepare_data
from dpo_exp.data.report import format_report
from dpo_exp.eval_logps import EvalLogpsWriter
from dpo_exp.export import EXPORT_DIR, export_policy
from dpo_exp.guards import NonFiniteGuard
from dpo_exp.losses import LossSpec
from dpo_exp.models import load_policy, load_reference, load_tokenizer
from dpo_exp.module import PreferenceModule
from dpo_exp.ref_cache import cache_wanted, load_or_compute
from dpo_exp.run_files import (
    SUMMARY,
    config_hash,
    keep_earlier_metrics,
    library_versions,
    write_failure,
    write_json_atomically,
    write_resolved_config,
)
from dpo_exp.scoring import shared_prompt_supported
from dpo_exp.sweep_summary import sweep_group
from dpo_exp.telemetry import TokenThroughput, model_flops_shape

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")
HEADLINE = ("val/loss", "val/rewards/accuracy", "val/rewards/margin")

# Lightning warnings that describe what this project does on purpose.
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")  # the frozen reference
warnings.filterwarnings(
    "ignore", message=r"Experiment logs directory .* exists and is not empty"
)  # the run folder


def build_loggers(cfg: DictConfig, run_dir: Path) -> list[Logger]:
    """A CSV of metrics always; W&B as well with `logger=wandb`."""
    loggers: list[Logger] = [CSVLogger(save_dir=run_dir, name="", version="")]
    if cfg.logger.name == "wandb":
        if not cfg.logger.online:
            # The mode must be in the environment before wandb starts its service process.
            os.environ["WANDB_MODE"] = "offline"
        flat_config = dict(_flatten(OmegaConf.to_container(cfg, resolve=True)))
        loggers.append(
            WandbLogger(
                project=cfg.logger.project,
                entity=cfg.logger.entity,
                name=cfg.run_name,
                group=cfg.logger.group or sweep_group(),
                tags=[
                    f"loss:{cfg.loss.name}",
                    f"model:{cfg.model.name}",
                    f"data:{cfg.data.name}",
                    *cfg.logger.tags,
                ],
                save_dir=str(run_dir),
                offline=not cfg.logger.online,
                config=flat_config,
            )
        )
    return loggers


def _flatten(tree: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested config -> ("a.b.c", value) pairs, so every override is a filterable W&B column."""
    if not isinstance(tree, dict):
        return [(prefix, tree)]
    return [
        pair
        for key, value in tree.items()
        for pair in _flatten(value, f"{prefix}.{key}" if prefix else str(key))
    ]


def build_trainer(cfg: DictConfig, run_dir: Path, callbacks: list[L.Callback]) -> L.Trainer:
    trainer_args = OmegaConf.to_container(cfg.trainer, resolve=True)
    strategy_args = instantiate(cfg.strategy, _convert_="all")  # `strategy` may be a Lightning object
    return L.Trainer(
        **trainer_args,
        **strategy_args,
        default_root_dir=str(run_dir),
        logger=build_loggers(cfg, run_dir),
        callbacks=callbacks,
    )


def build_module(
    cfg: DictConfig, spec: LossSpec, policy: PreTrainedModel, reference: PreTrainedModel | None
) -> PreferenceModule:
    """The LightningModule of a run, from its config and its loaded models."""
    return PreferenceModule(
        policy,
        reference,
        loss=spec.name,
        beta=float(cfg.beta),
        loss_options=loss_options(cfg.loss),
        optim=OmegaConf.to_container(cfg.optim, resolve=True),
        head_on_completions=bool(cfg.speed.head_on_completions),
    )


def share_prompt_wanted(
    cfg: DictConfig, spec: LossSpec, policy: PreTrainedModel, reference: PreTrainedModel | None
) -> bool:
    """Prompt ‖ chosen ‖ rejected rows when asked for, the data is paired and the models allow it."""
    models = [model for model in (policy, reference) if model is not None]
    return bool(cfg.speed.share_prompt) and spec.paired and all(map(shared_prompt_supported, models))


def run(
    cfg: DictConfig,
    run_dir: Path,
    *,
    callbacks: list[L.Callback] | None = None,
    extra_summary: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train one run into `run_dir`; return its summary (also written to summary.json at the end).

    `callbacks` join the trainer's; `extra_summary` is merged into the summary (the pipeline's
    reference figures and stage folders).
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    launch_environment = {key: os.environ.get(key) for key in DISTRIBUTED_ENVIRONMENT}
    try:
        return _run(cfg, run_dir, callbacks or [], extra_summary or {})
    except BaseException as error:
        write_failure(run_dir, error)
        raise
    finally:
        finish_wandb_run()
        release_process_group(launch_environment)


def finish_wandb_run() -> None:
    """Close this run's W&B run, so the next sweep member in this process starts its own."""
    import wandb

    if wandb.run is not None:
        wandb.finish()


# Set by Lightning's launcher in the launching process; left behind, the next sweep member in
# this process would take itself for a worker started by someone else and wait for its peers.
DISTRIBUTED_ENVIRONMENT = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


def release_process_group(launch_environment: dict[str, str | None]) -> None:
    """End this run's process group and restore the environment it was launched from."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    for key, value in launch_environment.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _run(
    cfg: DictConfig, run_dir: Path, callbacks: list[L.Callback], extra_summary: dict[str, Any]
) -> dict[str, Any]:
    start = time.perf_counter()
    spec = validate_config(cfg)
    resume_from = find_resume_checkpoint(cfg.resume, run_dir)
    if resume_from is not None:
        check_checkpoint(resume_from)
        print(f"resuming from {resume_from}")
        keep_earlier_metrics(run_dir)
    write_resolved_config(cfg, run_dir)
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    tokenizer = load_tokenizer(cfg.model)
    data = prepare_data(cfg.data, tokenizer, paired=spec.paired)
    print(format_report(data.train.report, f"train data ({cfg.data.name})"))
    print(format_report(data.validation.report, f"validation data ({cfg.data.name})"))

    policy = load_policy(cfg.model, tokenizer)
    cache = None
    if cache_wanted(cfg.reference, spec):
        cache = load_or_compute(
            cfg, policy, tokenizer, data, lambda: load_reference(cfg.model, policy), paired=spec.paired
        )
    reference = load_reference(cfg.model, policy) if spec.needs_reference and cache is None else None
    module = build_module(cfg, spec, policy, reference)
    datamodule = PreferenceDataModule(
        data,
        paired=spec.paired,
        pad_id=tokenizer.pad_token_id,
        batch_size=cfg.data.batch_size,
        eval_batch_size=cfg.data.eval_batch_size,
        seed=cfg.seed,
        shuffle=cfg.data.shuffle,
        group_by_length=bool(cfg.speed.group_by_length),
        ref_logps=None if cache is None else {"train": cache.train, "validation": cache.validation},
        share_prompt=share_prompt_wanted(cfg, spec, policy, reference),
    )
    throughput = TokenThroughput(
        cfg.trainer.log_every_n_steps, model=model_flops_shape(policy), peak_flops=float(cfg.speed.peak_flops)
    )
    guard = NonFiniteGuard(cfg.nonfinite)
    callbacks = [throughput, guard, *callbacks]
    if cfg.trainer.enable_checkpointing:
        callbacks.append(checkpoint_callback(run_dir, cfg.checkpoint.every_n_steps, cfg.checkpoint.keep_last))
    if cfg.save_eval_logps:
        callbacks.append(EvalLogpsWriter(run_dir))
    trainer = build_trainer(cfg, run_dir, callbacks=callbacks)
    trainer.fit(module, datamodule, ckpt_path=resume_from, weights_only=True)
    if trainer.global_step % int(cfg.trainer.val_check_interval) != 0:
        trainer.validate(module, datamodule, verbose=False)

    summary = {
        "run_name": cfg.run_name,
        "run_dir": str(run_dir),
        "loss": spec.name,
        "beta": float(cfg.beta),
        "seed": int(cfg.seed),
        "config_hash": config_hash(cfg),
        "global_step": trainer.global_step,
        "skipped_steps": guard.skipped_steps,
        "resumed_from": None if resume_from is None else str(resume_from),
        "metrics": {name: float(value) for name, value in sorted(trainer.callback_metrics.items())},
        "wall_time_s": time.perf_counter() - start,
        "train_time_s": throughput.train_seconds,
        "tokens": throughput.tokens,
        "tokens_per_s": throughput.tokens_per_s,
        "padding_fraction": throughput.padding_fraction,
        "peak_memory_gb": throughput.peak_memory_gb,
        "mfu": throughput.mfu,
        "reference_cached": cache is not None,
        "shared_prompt": datamodule.share_prompt,
        "data": {"train": vars(data.train.report), "validation": vars(data.validation.report)},
        "versions": library_versions(),
        **extra_summary,
    }
    if trainer.is_global_zero:
        if cfg.export.save and module.device_mesh is not None:
            print("export skipped: the policy is sharded (FSDP); export from a single-process run")
        elif cfg.export.save:
            summary["export_dir"] = str(run_dir / EXPORT_DIR)
            export_policy(module.policy, tokenizer, run_dir / EXPORT_DIR, cfg=cfg, summary=summary)
        write_json_atomically(summary, run_dir / SUMMARY)
        print(headline(summary))
    return summary


def headline(summary: dict[str, Any]) -> str:
    metrics = summary["metrics"]
    figures = [f"{name} {metrics[name]:.4f}" for name in HEADLINE if name in metrics]
    figures.append(f"tokens/s {summary['tokens_per_s']:.0f}")
    return f"run folder: {summary['run_dir']} | " + " | ".join(figures)


def pin_sweep_member(run_dir: Path) -> None:
    """Make processes launched for this sweep member re-run this member, not the whole sweep.

    Lightning starts DDP workers by re-running the command line with `hydra.run.dir` set to
    Hydra's run dir; in a multirun that command line is the sweep. Replace it with this member's
    own overrides and point the run dir at the member's folder.
    """
    hydra_cfg = HydraConfig.get()
    sys.argv = [sys.argv[0], *hydra_cfg.overrides.task]
    OmegaConf.set_readonly(hydra_cfg, False)
    hydra_cfg.run.dir = str(run_dir)
    OmegaConf.set_readonly(hydra_cfg, True)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Train one run, or the built-in pipeline when a task is set; return the `objective` metric."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    if HydraConfig.get().mode == RunMode.MULTIRUN:
        pin_sweep_member(run_dir)
    if cfg.get("task") is None:
        summary = run(cfg, run_dir)
    else:
        from dpo_exp.pipeline.run import run_pipeline  # the built-in experiment: SFT -> sample -> train

        summary = run_pipeline(cfg, run_dir)
    metrics = summary["metrics"]
    if cfg.objective not in metrics:
        print(f"objective {cfg.objective!r} is not among this run's metrics: {', '.join(metrics)}")
        return None
    return metrics[cfg.objective]


def console_main() -> None:
    """`dpo-exp [overrides]` trains like train.py; `dpo-exp data-report [overrides]` reports data;
    `dpo-exp compare <folder>` compares the runs under a folder."""
    if len(sys.argv) > 1 and sys.argv[1] == "compare":
        from dpo_exp import compare

        compare.main(sys.argv[2:])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "data-report":
        from dpo_exp import data_report

        sys.argv.pop(1)
        data_report.main()
        return
    main()
