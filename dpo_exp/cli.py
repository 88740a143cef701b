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
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from omegaconf import DictConfig, OmegaConf

from dpo_exp.config import loss_options, validate_config
from dpo_exp.data.module import PreferenceDataModule, prepare_data
from dpo_exp.data.report import format_report
from dpo_exp.models import load_policy, load_reference, load_tokenizer
from dpo_exp.module import PreferenceModule
from dpo_exp.run_files import (
    SUMMARY,
    config_hash,
    library_versions,
    write_failure,
    write_json_atomically,
    write_resolved_config,
)
from dpo_exp.telemetry import TokenThroughput

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")
HEADLINE = ("val/loss", "val/rewards/accuracy", "val/rewards/margin")

# Lightning warnings that describe what this project does on purpose.
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")  # the frozen reference
warnings.filterwarnings("ignore", message=r"Experiment logs directory .* exists and is not empty")  # the run folder


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
                group=cfg.logger.group,
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
        for pair in _flatten(value, f"{prefix}{key}." if prefix or key else key)
    ]


def build_trainer(cfg: DictConfig, run_dir: Path, callbacks: list[L.Callback]) -> L.Trainer:
    trainer_args = OmegaConf.to_container(cfg.trainer, resolve=True)
    strategy_args = OmegaConf.to_container(cfg.strategy, resolve=True)
    return L.Trainer(
        **trainer_args,
        **strategy_args,
        default_root_dir=str(run_dir),
        logger=build_loggers(cfg, run_dir),
        callbacks=callbacks,
    )


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
    try:
        return _run(cfg, run_dir, callbacks or [], extra_summary or {})
    except BaseException as error:
        write_failure(run_dir, error)
        raise


def _run(
    cfg: DictConfig, run_dir: Path, callbacks: list[L.Callback], extra_summary: dict[str, Any]
) -> dict[str, Any]:
    start = time.perf_counter()
    spec = validate_config(cfg)
    write_resolved_config(cfg, run_dir)
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    tokenizer = load_tokenizer(cfg.model)
    data = prepare_data(cfg.data, tokenizer, paired=spec.paired)
    print(format_report(data.train.report, f"train data ({cfg.data.name})"))
    print(format_report(data.validation.report, f"validation data ({cfg.data.name})"))

    policy = load_policy(cfg.model, tokenizer)
    reference = load_reference(cfg.model, policy) if spec.needs_reference else None
    module = PreferenceModule(
        policy,
        reference,
        loss=spec.name,
        beta=float(cfg.beta),
        loss_options=loss_options(cfg.loss),
        optim=OmegaConf.to_container(cfg.optim, resolve=True),
    )
    datamodule = PreferenceDataModule(
        data,
        paired=spec.paired,
        pad_id=tokenizer.pad_token_id,
        batch_size=cfg.data.batch_size,
        eval_batch_size=cfg.data.eval_batch_size,
        seed=cfg.seed,
    )
    throughput = TokenThroughput(cfg.trainer.log_every_n_steps)
    trainer = build_trainer(cfg, run_dir, callbacks=[throughput, *callbacks])
    trainer.fit(module, datamodule)
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
        "metrics": {name: float(value) for name, value in sorted(trainer.callback_metrics.items())},
        "wall_time_s": time.perf_counter() - start,
        "train_time_s": throughput.train_seconds,
        "tokens_per_s": throughput.tokens_per_s,
        "padding_fraction": throughput.padding_fraction,
        "data": {"train": vars(data.train.report), "validation": vars(data.validation.report)},
        "versions": library_versions(),
        **extra_summary,
    }
    if trainer.is_global_zero:
        write_json_atomically(summary, run_dir / SUMMARY)
        print(headline(summary))
    return summary


def headline(summary: dict[str, Any]) -> str:
    metrics = summary["metrics"]
    figures = [f"{name} {metrics[name]:.4f}" for name in HEADLINE if name in metrics]
    figures.append(f"tokens/s {summary['tokens_per_s']:.0f}")
    return f"run folder: {summary['run_dir']} | " + " | ".join(figures)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    if cfg.get("task") is None:
        run(cfg, run_dir)
        return
    from dpo_exp.pipeline.run import run_pipeline  # the built-in experiment: SFT -> sample -> train

    run_pipeline(cfg, run_dir)


def console_main() -> None:
    """`dpo-exp [overrides]` trains like train.py; `dpo-exp data-report [overrides]` reports data."""
    if len(sys.argv) > 1 and sys.argv[1] == "data-report":
        from dpo_exp import data_report

        sys.argv.pop(1)
        data_report.main()
        return
    main()
