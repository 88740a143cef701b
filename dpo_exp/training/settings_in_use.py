"""Settings that only mean something when another setting enables them: which of a run's settings it
reads. The entry refuses them where a launch set them (`dpo_exp.config.dependent`); W&B leaves them
out of the run's config (`dpo_exp.training.wandb_run`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from omegaconf import DictConfig

from dpo_exp.devices import weights_dtype
from dpo_exp.losses import get_loss
from dpo_exp.models.reward import is_function


def uses_reference(cfg: DictConfig) -> bool:
    return get_loss(cfg.loss.name).needs_reference


# Keys that only mean something when another setting enables them: (key prefix, whether the
# run uses it, why not; `{loss}` is the loss's name). Checked for the keys a launch set
# (`set_keys`), wherever it set them.
DEPENDENT_KEYS: tuple[tuple[str, Callable[[DictConfig], bool], str], ...] = (
    *(
        (key, uses_reference, "loss={loss} uses no reference model")
        for key in ("reference.cache", "model.ref_path", "model.ref_dtype")
    ),
    ("reference.cache_dir", lambda cfg: bool(cfg.reference.cache), "the reference cache is off"),
    ("speed.pack", lambda cfg: bool(cfg.speed.share_prompt), "speed.share_prompt=false: rows are not shared"),
    (
        "speed.logits_chunk",
        lambda cfg: bool(cfg.speed.head_on_completions),
        "speed.head_on_completions=false computes the full logits",
    ),
    ("checkpoint.", lambda cfg: bool(cfg.trainer.enable_checkpointing), "trainer.enable_checkpointing=false"),
    (
        "trainer.max_steps",
        lambda cfg: cfg.trainer.get("max_epochs") is None,
        "trainer.max_epochs is set, and replaces it (the run's line says how many steps that is)",
    ),
    ("optim.warmup_ratio", lambda cfg: cfg.optim.warmup_steps is None, "optim.warmup_steps is set, and wins"),
    (
        "optim.master_weights",
        lambda cfg: weights_dtype(cfg.trainer.precision, cfg.model.get("dtype")) != torch.float32,
        "the weights are fp32 (neither trainer.precision=bf16-true nor model.dtype=bfloat16)",
    ),
    ("export.lora", lambda cfg: bool(cfg.export.save), "nothing is exported (export.save=false)"),
    ("online.reference", lambda cfg: int(cfg.online.rounds) > 1, "one round's reference is the SFT model"),
    ("sft.check_every", lambda cfg: cfg.sft.target_reward is not None, "sft.target_reward=null: no checks"),
    ("sample.vllm_", lambda cfg: samples_with_vllm(cfg), "sample.backend=hf samples with generate"),
    (
        "sample.batch_size",
        lambda cfg: not samples_with_vllm(cfg),
        "sample.backend=vllm batches the prompts itself",
    ),
    *(
        (
            f"task.reward_{key}",
            lambda cfg: is_classifier(cfg.get("task"), "reward"),
            "task.reward is a function",
        )
        for key in ("output", "revision")
    ),
    *(
        (
            f"evaluate.reward_{key}",
            lambda cfg: is_classifier(cfg.get("evaluate"), "reward"),
            "evaluate.reward is null (the task's reward, with the task's settings) or a function",
        )
        for key in ("output", "revision")
    ),
    *(
        (f"data.{key}", lambda cfg: reads_dataset(cfg.data), "data.train_path is read, not data.dataset")
        for key in ("revision", "subset", "data_dir", "train_split", "validation_split")
    ),
    ("data.val_size", lambda cfg: not validation_is_read(cfg.data), "validation is read, not cut from train"),
    (
        "data.split_seed",
        lambda cfg: not validation_is_read(cfg.data),
        "validation is read, not cut from train",
    ),
)


def samples_with_vllm(cfg: DictConfig) -> bool:
    """Whether the built-in experiment's sample stage draws with vLLM (`sample.backend`)."""
    sample = cfg.get("sample")
    return sample is not None and str(sample.get("backend", "hf")) == "vllm"


def is_classifier(section: DictConfig | None, key: str) -> bool:
    """Whether `section.key` names a classifier reward (a path or hub id, not null or a function)."""
    spec = None if section is None else section.get(key)
    return spec is not None and not is_function(str(spec))


def reads_dataset(data_cfg: DictConfig) -> bool:
    """Whether the run reads `data.dataset` (a file given as `data.train_path` wins)."""
    return bool(data_cfg.get("dataset")) and data_cfg.get("train_path") is None


def validation_is_read(data_cfg: DictConfig) -> bool:
    """Whether validation has its own file or dataset split (else it is cut from train)."""
    if data_cfg.get("train_path") is not None:
        return data_cfg.get("validation_path") is not None
    return reads_dataset(data_cfg) and data_cfg.get("validation_split") is not None


def unused_settings(cfg: DictConfig) -> list[tuple[str, str]]:
    """(key prefix, why) of every dependent setting this run does not read."""
    return [
        (prefix, reason.format(loss=cfg.loss.name))
        for prefix, used, reason in DEPENDENT_KEYS
        if not used(cfg)
    ]
