"""A policy's validation figures on a preference set, with no training, and their record.

The figures are a run's own: the run's module and data module, assembled by `assemble_run`, and
Lightning's `trainer.validate`, so they are computed by the code that logs `val/*` in training.
The policy is a saved model (`model.path`), a run's export or one of its checkpoints; the
reference is `model.ref_path`, or for a run's policy the reference that run trained against,
rebuilt as training built it (the same seed gives a model built from its config the same weights).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig

from dpo_exp.data.module import data_label, prepare_evaluated
from dpo_exp.devices import allow_tf32, run_precision
from dpo_exp.errors import ConfigError
from dpo_exp.losses import get_loss, takes_beta
from dpo_exp.models.loading import load_pretrained, load_tokenizer, model_label
from dpo_exp.models.lora import is_lora, uses_lora
from dpo_exp.storage import write_json_atomically
from dpo_exp.training.checkpoints import check_checkpoint, is_distributed_checkpoint, latest_checkpoint
from dpo_exp.training.export import EXPORT_DIR
from dpo_exp.training.ref_cache import data_fingerprint
from dpo_exp.training.resume import step_of
from dpo_exp.training.run import RunParts, assemble_run
from dpo_exp.training.run_files import CONFIG, SUMMARY, digest_of, library_versions

EVALUATIONS_DIR = "evaluations"  # in a run folder, and under output_root for a model of no run


@dataclass(frozen=True)
class PolicySource:
    """Where the evaluated policy's weights are read: `model` (model.path, as the config loads it),
    `export` (a finished run's model/ folder) or `checkpoint` (a run's Lightning checkpoint)."""

    kind: str
    path: Path
    run_dir: Path | None = None
    step: int | None = None


def run_policy(path: Path) -> PolicySource:
    """The policy `run=<path>` names: that checkpoint; or the run folder's export, where the run
    finished with one; else the folder's newest checkpoint that checks."""
    if path.name.endswith(".ckpt") or is_distributed_checkpoint(path):
        run_dir = next((folder for folder in path.parents if (folder / CONFIG).is_file()), None)
        if not path.exists():
            raise ConfigError(f"run: checkpoint not found: {path}")
        if run_dir is None:
            raise ConfigError(f"run: {path} is in no run folder (no {CONFIG} above it)")
        return checkpoint_policy(path, run_dir)
    if not (path / CONFIG).is_file():
        raise ConfigError(f"run: {path} is not a run folder (it has no {CONFIG})")
    if (path / SUMMARY).is_file() and (path / EXPORT_DIR).is_dir():
        return PolicySource("export", path / EXPORT_DIR, path)
    checkpoint = latest_checkpoint(path)
    if checkpoint is None:
        raise ConfigError(
            f"run: {path} has neither an exported model ({EXPORT_DIR}/, written when a run finishes) "
            "nor a usable checkpoint"
        )
    return checkpoint_policy(checkpoint, path)


def checkpoint_policy(checkpoint: Path, run_dir: Path) -> PolicySource:
    if is_distributed_checkpoint(checkpoint):
        raise ConfigError(
            f"run: {checkpoint} is a sharded (FSDP) checkpoint; evaluate reads a single-process "
            "checkpoint or a run's export"
        )
    try:
        check_checkpoint(checkpoint)
    except ConfigError as error:  # its messages speak of resuming
        raise ConfigError(f"run: {str(error).removeprefix('resume: ')}") from None
    return PolicySource("checkpoint", checkpoint, run_dir, step_of(checkpoint))


def load_policy_weights(parts: RunParts, source: PolicySource, model_cfg: DictConfig) -> None:
    """Put the evaluated weights into the assembled policy (built as the run's initial policy)."""
    if source.kind == "export":
        if is_lora(parts.policy):
            raise ConfigError(
                f"run: {source.run_dir} trained a LoRA adapter; evaluate its checkpoint "
                f"(run=<a checkpoint in {source.run_dir}/checkpoints>), or its export as a model: "
                f"model=hf model.path={source.path} model.ref_path=<its base model>"
            )
        exported = load_pretrained(str(source.path), model_cfg, dtype=model_cfg.get("dtype"))
        parts.policy.load_state_dict(exported.state_dict())
    elif source.kind == "checkpoint":
        checkpoint = torch.load(source.path, map_location="cpu", weights_only=True)
        parts.module.on_load_checkpoint(checkpoint)  # the reference's keys, BCO's reward moments
        parts.module.load_state_dict(checkpoint["state_dict"])


def reference_record(cfg: DictConfig, parts: RunParts) -> dict[str, Any] | None:
    """What the policy was compared with: None for a loss without a reference."""
    if not parts.spec.needs_reference:
        return None
    if cfg.model.get("ref_path") is not None:
        return {"kind": "model", "path": str(cfg.model.ref_path)}
    if parts.reference is None and uses_lora(cfg.model):
        return {"kind": "the policy's base, adapter off", "path": cfg.model.get("path")}
    return {"kind": "the run's initial policy", "path": cfg.model.get("path"), "seed": int(cfg.seed)}


def validation_trainer(cfg: DictConfig) -> L.Trainer:
    """One process on the config's accelerator, in its precision; no logger, no checkpoints."""
    return L.Trainer(
        accelerator=cfg.strategy.accelerator,
        devices=1,
        num_nodes=1,
        precision=cfg.trainer.precision,
        deterministic=cfg.trainer.get("deterministic", False),
        limit_val_batches=cfg.trainer.get("limit_val_batches"),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )


def evaluate(cfg: DictConfig, source: PolicySource, *, named_set: bool) -> dict[str, Any]:
    """Validate the policy `source` names on the set `cfg.data` names, read whole (`named_set`), else
    on the validation split it gives a run; return the record: policy, reference, data, loss, beta,
    and the `val/*` metrics."""
    start = time.perf_counter()
    data = None
    if named_set:
        data = prepare_evaluated(cfg.data, load_tokenizer(cfg.model), paired=get_loss(cfg.loss.name).paired)
    cfg.trainer.precision = run_precision(cfg.trainer.precision, cfg.strategy.accelerator)
    allow_tf32(cfg.strategy.accelerator, cfg.speed.tf32)
    cfg.reference.cache = False  # reference log-probs from the reference model itself, never a cache
    L.seed_everything(cfg.seed, workers=True, verbose=False)  # before the models, as a run seeds
    parts = assemble_run(cfg, data)
    load_policy_weights(parts, source, cfg.model)
    trainer = validation_trainer(cfg)
    trainer.validate(parts.module, parts.datamodule, verbose=False)
    metrics = {name: float(value) for name, value in sorted(trainer.callback_metrics.items())}
    validation = parts.data.validation
    return {
        "policy": {
            "kind": source.kind,
            "path": str(source.path),
            **({"run_dir": str(source.run_dir)} if source.run_dir is not None else {}),
            **({"step": source.step} if source.step is not None else {}),
            "model": model_label(cfg.model),
        },
        "reference": reference_record(cfg, parts),
        "data": {
            "name": evaluated_label(cfg.data, named_set=named_set),
            "read": validation.report.source,
            "rows": validation.report.rows_kept,
            "dropped": sum(validation.report.dropped.values()),
            "digest": data_fingerprint(validation.items),
            "max_length": int(cfg.data.max_length),
            "max_prompt_length": int(cfg.data.max_prompt_length),
        },
        "loss": parts.spec.name,
        "beta": float(cfg.beta) if takes_beta(parts.spec.name) else None,
        "loss_options": parts.loss_options,
        "paired": parts.spec.paired,
        "precision": str(cfg.trainer.precision),
        "metrics": {name: value for name, value in metrics.items() if name.startswith("val/")},
        "wall_time_s": time.perf_counter() - start,
        "versions": library_versions(),
    }


def evaluated_label(data_cfg: DictConfig, *, named_set: bool) -> str:
    """The data's label; for a set read whole from its own file, that file's name, not the
    training file's (`pairs-heldout`, not the run's `pairs-prefs`)."""
    path = data_cfg.get("validation_path")
    if named_set and path:
        return f"{data_cfg.name}-{Path(str(path)).name.split('.')[0]}"
    return data_label(data_cfg)


def evaluation_path(record: dict[str, Any], folder: Path, *, suffix: str = "") -> Path:
    """`<folder>/<data label>-<data digest>[suffix].json`: one file per evaluated set and setup."""
    data = record["data"]
    return folder / f"{data['name']}-{data['digest'][:8]}{suffix}.json"


def setup_digest(record: dict[str, Any]) -> str:
    """8 hex digits of what, besides the data, decides the figures: policy, reference, loss, beta."""
    setup = {key: record[key] for key in ("policy", "reference", "loss", "beta", "loss_options", "precision")}
    return digest_of(setup)[:8]


def write_evaluation(record: dict[str, Any], path: Path) -> Path:
    """The record as JSON, written whole or not at all."""
    write_json_atomically({**record, "file": str(path)}, path)
    return path
