"""Unknown keys refused with the closest real one: a typo, or a name from TRL's DPOConfig.

A key the config does not have is refused in one line that names what to write instead, so a
typo costs one round trip, not two (Hydra's own answer, "use +lr=...", leads to a second refusal).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable
from typing import Any

from hydra.core.override_parser.types import Override
from hydra.errors import ConfigCompositionException
from omegaconf import DictConfig, OmegaConf

from dpo_exp.config.schema import EXPERIMENT_SECTIONS

# TRL's DPOConfig (and transformers' TrainingArguments) names, and ours where one says the same:
# the key, and what differs where TRL's value would not carry over as it is.
TRL_NAMES: dict[str, tuple[str, str | None]] = {
    "learning_rate": ("optim.lr", None),
    "num_train_epochs": ("trainer.max_epochs", None),
    "max_steps": ("trainer.max_steps", None),
    "loss_type": ("loss", None),
    "per_device_train_batch_size": ("data.batch_size", "the global batch, over every device"),
    "per_device_eval_batch_size": ("data.eval_batch_size", "the global batch, over every device"),
    "gradient_accumulation_steps": ("trainer.accumulate_grad_batches", None),
    "warmup_ratio": ("optim.warmup_steps", "a number of steps, not a fraction of the run"),
    "warmup_steps": ("optim.warmup_steps", None),
    "lr_scheduler_type": ("optim.scheduler", None),
    "weight_decay": ("optim.weight_decay", None),
    "adam_beta1": ("optim.betas", "both betas as a list: optim.betas=[0.9,0.999]"),
    "adam_beta2": ("optim.betas", "both betas as a list: optim.betas=[0.9,0.999]"),
    "adam_epsilon": ("optim.eps", None),
    "max_grad_norm": ("trainer.gradient_clip_val", None),
    "max_length": ("data.max_length", None),
    "max_prompt_length": ("data.max_prompt_length", None),
    "max_completion_length": ("data.max_length", "the prompt and the completion together"),
    "label_smoothing": ("loss.label_smoothing", None),
    "rpo_alpha": ("loss.alpha", "with loss=rpo"),
    "simpo_gamma": ("loss.gamma", "with loss=simpo"),
    "precompute_ref_log_probs": ("reference.cache", None),
    "eval_steps": ("trainer.val_check_interval", None),
    "logging_steps": ("trainer.log_every_n_steps", None),
    "save_steps": ("checkpoint.every_n_steps", None),
    "save_total_limit": ("checkpoint.keep_last", None),
    "output_dir": ("output_root", None),
    "bf16": ("trainer.precision", "trainer.precision=bf16-mixed, or bf16-true for bf16 weights"),
    "gradient_checkpointing": ("model.activation_checkpointing", None),
    "report_to": ("logger", None),
    "model_name_or_path": ("model.path", None),
    "dataset_name": ("data.dataset", None),
    "resume_from_checkpoint": ("resume", None),
}
# TRL's values of loss_type whose loss has another name here.
TRL_LOSS_TYPES = {"sigmoid": "dpo"}
# How close a name must be to count as a typo of another (difflib's ratio, 0 to 1).
CUTOFF = 0.6


def key_paths(node: Any, prefix: str = "") -> list[str]:
    """Every dotted key of `node`, sections and leaves, in order (Hydra's own settings left out)."""
    paths = []
    if isinstance(node, DictConfig):
        for key in node.keys():
            if str(key) == "hydra":
                continue
            path = f"{prefix}{key}"
            paths.append(path)
            child = node._get_node(key)
            if isinstance(child, DictConfig):
                paths += key_paths(child, f"{path}.")
    return paths


def closest_key(key: str, known: Iterable[str]) -> tuple[str, str | None] | None:
    """The known key `key` most likely means: ("optim.lr", None) for a typo or a leaf named
    without its section; for one of TRL's names, ours and what differs (see TRL_NAMES)."""
    # The run's sections before the built-in experiment's: `lr` is optim.lr before sft.lr.
    known = sorted(
        (path for path in known if path != key), key=lambda path: path.split(".")[0] in EXPERIMENT_SECTIONS
    )
    leaf = key.rsplit(".", 1)[-1]
    if leaf in TRL_NAMES:
        return TRL_NAMES[leaf]
    candidates: dict[str, tuple[str, str | None]] = {path: (path, None) for path in known}
    for path in known:  # a leaf named without its section
        candidates.setdefault(path.rsplit(".", 1)[-1], (path, None))
    for name, target in TRL_NAMES.items():
        candidates.setdefault(name, target)
    best, score = None, 0.0
    for query in dict.fromkeys((key, leaf)):
        for name in difflib.get_close_matches(query, candidates, n=3, cutoff=CUTOFF):
            ratio = difflib.SequenceMatcher(None, query, name).ratio()
            if ratio > score:
                best, score = candidates[name], ratio
    return best


def unknown_key_message(key: str, cfg: DictConfig | None, value: Any = None) -> str:
    """`lr: not a setting of dpo_exp; did you mean optim.lr=1e-6?`: the override to write instead.

    `cfg` holds the keys that exist (the composed config); `value`, the one the user gave, if any.
    """
    known = key_paths(cfg) if cfg is not None else [target for target, _ in TRL_NAMES.values()]
    hint = suggestion(key, known, value)
    return f"{key}: not a setting of dpo_exp" + (hint or " (see conf/config.yaml for the settings)")


def suggestion(key: str, known: Iterable[str], value: Any = None) -> str:
    """`; did you mean optim.lr=1e-6? (learning_rate is TRL's name)`, or "" when nothing is close."""
    found = closest_key(key, known)
    if found is None:
        return ""
    ours, differs = found
    trl = key.rsplit(".", 1)[-1] in TRL_NAMES
    if value is not None and differs is None:
        shown = TRL_LOSS_TYPES.get(str(value), value) if ours == "loss" else value
        ours = f"{ours}={format_value(shown)}"
    note = "TRL's name" + (f"; here: {differs}" if differs else "") if trl else differs
    return f"; did you mean {ours}?" + (f" ({key} is {note})" if trl else "")


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def refuse_unknown_overrides() -> None:
    """Have Hydra refuse an override of a key the config lacks with our one line (the closest real
    key), not its "To append to your config use +lr=..." (which would then be refused).

    Hydra applies command-line overrides to the composed config in one step of its loader, and
    prints what that step raises as an error with a hint and exit 1; SystemExit goes through it as
    the message alone. With HYDRA_FULL_ERROR=1 Hydra's own error goes on up.
    """
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    apply = ConfigLoaderImpl._apply_overrides_to_config
    if getattr(apply, "refuses_unknown_keys", False):
        return

    def apply_or_refuse(overrides: list[Override], cfg: DictConfig) -> None:
        try:
            apply(overrides, cfg)
        except ConfigCompositionException:
            unknown = first_unknown(overrides, cfg)
            if unknown is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            value = None if unknown.is_delete() else unknown.input_line.split("=", 1)[1]
            raise SystemExit(unknown_key_message(unknown.key_or_group, cfg, value)) from None

    apply_or_refuse.refuses_unknown_keys = True  # type: ignore[attr-defined]
    ConfigLoaderImpl._apply_overrides_to_config = staticmethod(apply_or_refuse)  # type: ignore[method-assign]


def first_unknown(overrides: list[Override], cfg: DictConfig) -> Override | None:
    """The first override that changes or deletes a key `cfg` does not have (adding one with `+`
    is the validator's to refuse, once the config is whole)."""
    for override in overrides:
        if override.is_add() or override.is_force_add() or override.package is not None:
            continue
        if OmegaConf.select(cfg, override.key_or_group, default=MISSING_KEY) is MISSING_KEY:
            return override
    return None


MISSING_KEY = object()
