"""The config of `dpo-exp evaluate`: what is scored against what, on which set, and where it is written.

Two ways to name the policy. `run=<run folder or checkpoint>`: the run's resolved config gives
model, reference, loss, beta, tokenizer and truncation, and the run's own validation split is
evaluated unless a data override names another set. `model.path=<model folder>` (no run): the
reference must be named (`model.ref_path`) for a loss that has one, since a policy compared with
itself has margins 0. Keys an evaluation would not read are refused, each with the reason.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from dpo_exp.config.defaults import CONF_DIR, override_keys, set_keys
from dpo_exp.config.offline import offline_when_local
from dpo_exp.config.validate import is_experiment, validate_config
from dpo_exp.data.module import evaluated_location
from dpo_exp.errors import ConfigError
from dpo_exp.losses import LossSpec, get_loss, loss_inputs
from dpo_exp.models.loading import model_label
from dpo_exp.training.evaluation import (
    EVALUATIONS_DIR,
    PolicySource,
    evaluate,
    evaluation_path,
    run_policy,
    setup_digest,
    write_evaluation,
)
from dpo_exp.training.result import evaluation_result
from dpo_exp.training.run_files import SUMMARY, read_resolved_config

NOTHING_TRAINS = "evaluate trains nothing"
# Keys an evaluation reads nowhere: (key prefix, why), refused wherever they are set.
UNUSED_KEYS: tuple[tuple[str, str], ...] = (
    ("optim.", NOTHING_TRAINS),
    *((f"trainer.{key}", NOTHING_TRAINS) for key in ("max_steps", "max_epochs", "val_check_interval",
      "log_every_n_steps", "accumulate_grad_batches", "gradient_clip_val", "enable_checkpointing")),
    ("checkpoint.", NOTHING_TRAINS),
    ("export.", NOTHING_TRAINS),
    ("resume", NOTHING_TRAINS),
    ("nonfinite", NOTHING_TRAINS),
    ("objective", "evaluate returns no objective to a sweeper"),
    ("save_eval_logps", "evaluate writes its figures only"),
    ("logger", "evaluate logs nothing: its figures are printed and written as JSON"),
    ("run_name", "evaluate starts no run"),
    ("reference.", "the reference's log-probs are computed by the reference model, never cached or moved"),
    ("strategy.devices", "evaluate runs in one process"),
    ("strategy.num_nodes", "evaluate runs in one process"),
    ("strategy.strategy", "evaluate runs in one process"),
    ("data.batch_size", "evaluation batches are data.eval_batch_size"),
    ("data.shuffle", "evaluation reads the set in order"),
    ("data.train_path", "evaluate reads no training data: the set it evaluates is data.validation_path"),
    ("data.train_split", "evaluate reads no training data: the set it evaluates is data.validation_split"),
    ("model.lora", "evaluate trains no adapter (a saved one is model.adapter_path)"),
)  # fmt: skip
# Data keys that name another set than a run's own validation split.
SET_KEYS = ("data", "data.validation_path", "data.dataset", "data.validation_split", "data.source")
# Data keys a run's evaluation keeps from the run (its tokenisation), unless set on the command line.
RUN_DATA_KEYS = ("max_length", "max_prompt_length", "eval_batch_size")


@dataclass
class EvaluationPlan:
    """What to evaluate: the config, the policy's weights, whether the set is named (read whole) or
    a run's own validation split, and the folder and file-name suffix of the record."""

    cfg: DictConfig
    source: PolicySource
    named_set: bool
    folder: Path
    suffix: str = ""
    suffix_from_setup: bool = False  # a model of no run: the record's name carries its setup's digest


def split_run_argument(arguments: Sequence[str]) -> tuple[str | None, list[str]]:
    """(`run=`'s value, the other arguments): `run` is this command's own, not a config key."""
    runs = [argument.split("=", 1)[1] for argument in arguments if argument.startswith("run=")]
    if len(runs) > 1:
        raise ConfigError(f"run: given {len(runs)} times; evaluate scores one policy")
    if runs and not runs[0]:
        raise ConfigError("run: give a run folder or a checkpoint: run=<path>")
    rest = [argument for argument in arguments if not argument.startswith("run=")]
    return (runs[0] if runs else None), rest


def run_arguments(run: str, arguments: Sequence[str]) -> list[str]:
    """The run's own group options (and model path), before the user's, so that Hydra composes the
    groups the run used: `data.validation_path=...` is then a key of the run's data group."""
    config = run_config(run_policy(Path(run)).run_dir)
    chosen = set(override_keys(arguments))
    groups = []
    for group in ("model", "loss", "data"):
        name = (config.get(group) or {}).get("name")
        if group not in chosen and name and (Path(CONF_DIR) / group / f"{name}.yaml").is_file():
            groups.append(f"{group}={name}")
    path = (config.get("model") or {}).get("path")
    if "model" not in chosen and path is not None:
        groups.append(f"model.path={path}")  # the run's folder name is composed from it
    return [*groups, *arguments]


def run_config(run_dir: Path | None) -> dict[str, Any]:
    config = None if run_dir is None else read_resolved_config(run_dir)
    if config is None:
        raise ConfigError(f"run: {run_dir} has no readable config.yaml")
    if config.get("task") is not None:
        raise ConfigError(
            f"run: {run_dir} is a round of the built-in experiment, whose figures it measures itself; "
            f"evaluate its policy as a model: model=hf model.path={run_dir}/model "
            "model.ref_path=<its SFT model> data=pairs data.validation_path=<file>"
        )
    return config


def refuse_unused(changed: Sequence[str], extra: Sequence[tuple[str, str]] = ()) -> None:
    for key in changed:
        for prefix, reason in (*UNUSED_KEYS, *extra):
            if key == prefix or key.startswith(prefix if prefix.endswith(".") else prefix + "."):
                raise ConfigError(f"{key}: has no effect: {reason}")


def evaluation_plan(
    cfg: DictConfig, overrides: Sequence[str], run: str | None, given: Sequence[str]
) -> EvaluationPlan:
    """The checked plan of `dpo-exp evaluate`: `cfg` is Hydra's config of `overrides`, which are the
    arguments `given` (less `run=`) after, when `run` names a run, its own groups (`run_arguments`)."""
    if run is not None:
        return run_plan(cfg, overrides, run_policy(Path(run)), given)
    return model_plan(cfg, overrides)


def model_plan(cfg: DictConfig, overrides: Sequence[str]) -> EvaluationPlan:
    """A saved model as the policy, against `model.ref_path`, on the set the data names."""
    if is_experiment(cfg):
        raise ConfigError(
            f"data={cfg.data.name} is the built-in experiment's task, not a preference set: "
            "name one, data=pairs data.validation_path=<file> (or data=unpaired for loss=kto)"
        )
    changed = set_keys(cfg, overrides)
    refuse_unused(
        changed, [("seed", "nothing is drawn at random: the model is loaded, the set read in order")]
    )
    if cfg.model.get("path") is None:
        raise ConfigError(
            f"model.path: model={cfg.model.name} is built from its config, with random weights; evaluate "
            "scores a saved model (model=hf model.path=<folder>) or a run's policy (run=<run folder>)"
        )
    spec = get_loss(cfg.loss.name)
    check_model_reference(cfg, spec)
    refuse_auto_options(cfg, None)
    named_set_required(cfg)
    validate_named_set(cfg, overrides)
    folder = Path(cfg.output_root) / EVALUATIONS_DIR / model_label(cfg.model)
    return EvaluationPlan(cfg, PolicySource("model", Path(str(cfg.model.path))), True, folder, "", True)


def check_model_reference(cfg: DictConfig, spec: LossSpec) -> None:
    """A loss with a reference needs one named; a loss without one refuses a named one."""
    ref_path = cfg.model.get("ref_path")
    if not spec.needs_reference:
        if ref_path is not None:
            raise ConfigError(f"model.ref_path: has no effect: loss={spec.name} uses no reference model")
        return
    base = cfg.model.get("adapter_path") is not None and cfg.model.get("adapter_reference") == "base"
    if ref_path is None and not base:
        raise ConfigError(
            f"model.ref_path: loss={spec.name} compares the policy with a reference, and none is named "
            "(the policy itself would give margins 0): set model.ref_path=<the model it was trained from>, "
            "or evaluate a run (run=<run folder>), whose reference is its own"
        )
    if "reward_shift" in loss_inputs(spec):
        raise ConfigError(
            f"loss={spec.name}: its reward shift is the mean reward seen in training, kept in a run's "
            "checkpoints only: evaluate a checkpoint (run=<run folder>/checkpoints/<step>.ckpt)"
        )


def named_set_required(cfg: DictConfig) -> None:
    if evaluated_location(cfg.data) is None:
        raise ConfigError(
            "data.validation_path: name the set to evaluate: data.validation_path=<file> "
            "(or data.dataset=<hub id or folder> data.validation_split=<split>)"
        )


def validate_named_set(
    cfg: DictConfig, overrides: Sequence[str], changed: Sequence[str] | None = None
) -> None:
    """The checks of a run's config; the evaluated file stands in for the training file they ask
    for (no training rows are read)."""
    stand_in = cfg.copy()
    if stand_in.data.get("train_path") is None and stand_in.data.get("validation_path") is not None:
        stand_in.data.train_path = stand_in.data.validation_path
    validate_config(stand_in, overrides=overrides, changed=changed)


def refuse_auto_options(cfg: DictConfig, recorded: dict[str, Any] | None) -> None:
    """An `auto` loss option is chosen from a run's training data, which evaluate does not read: the
    run's recorded choice where there is one, else refused."""
    for option, value in cfg.loss.items():
        if value != "auto":
            continue
        if recorded is not None and option in recorded:
            cfg.loss[option] = recorded[option]
            continue
        raise ConfigError(
            f"loss.{option}=auto: chosen from training data, which evaluate does not read; set a number"
        )


def run_plan(
    cfg: DictConfig, overrides: Sequence[str], source: PolicySource, given: Sequence[str]
) -> EvaluationPlan:
    """A run's policy and reference, on its own validation split or on the set a data override names."""
    assert source.run_dir is not None
    held = run_config(source.run_dir)
    changed = override_keys(given)
    own = "the run's own model, reference and seed (to evaluate another model, name it without run=)"
    refuse_unused(changed, [("model", own), ("seed", own)])
    merged = merge_overrides(held, cfg, changed)
    named_set = any(key in SET_KEYS for key in changed)
    spec = get_loss(merged.loss.name)
    refuse_lost_state(merged, spec, source)
    if named_set:
        loss_unchanged = not any(key == "loss" for key in changed)
        refuse_auto_options(merged, recorded_loss_options(source.run_dir) if loss_unchanged else None)
        named_set_required(merged)
        validate_named_set(merged, given, changed)
    else:
        validate_config(merged, overrides=given, changed=changed)
    suffix = f"-step{source.step}" if source.kind == "checkpoint" else ""
    if merged.loss.name != held["loss"]["name"] or float(merged.beta) != float(held["beta"]):
        suffix += f"-{merged.loss.name}-beta{float(merged.beta):g}"
    return EvaluationPlan(merged, source, named_set, source.run_dir / EVALUATIONS_DIR, suffix)


def merge_overrides(held: dict[str, Any], composed: DictConfig, changed: Sequence[str]) -> DictConfig:
    """The run's config with the keys the command line set taken from Hydra's composition of it.
    A data group chosen anew keeps the run's tokenisation (and its field names, when the group is
    the run's), unless set."""
    merged = OmegaConf.create(held)
    for key in changed:
        value = OmegaConf.select(composed, key, throw_on_missing=False)
        if OmegaConf.is_config(value):
            value = OmegaConf.to_container(value, resolve=True)
        OmegaConf.update(merged, key, value, merge=False, force_add=True)
    if "data" in changed:
        kept = [*RUN_DATA_KEYS, *(["options"] if held["data"]["name"] == merged.data.name else [])]
        for key in kept:
            if not any(c == f"data.{key}" or c.startswith(f"data.{key}.") for c in changed):
                merged.data[key] = held["data"][key]
    merged.resume = None  # evaluate continues no run
    return merged


def refuse_lost_state(cfg: DictConfig, spec: LossSpec, source: PolicySource) -> None:
    """Training state a run's export does not keep, only its checkpoints: a moving reference
    (reference.sync_every) and BCO's reward shift."""
    if source.kind == "checkpoint":
        return
    checkpoints = f"run={source.run_dir}/checkpoints/<step>.ckpt"
    if spec.needs_reference and cfg.reference.get("sync_every") is not None:
        raise ConfigError(
            f"run: the run's reference moved in training (reference.sync_every), and its export keeps "
            f"the policy only: evaluate a checkpoint, which keeps both ({checkpoints})"
        )
    if "reward_shift" in loss_inputs(spec):
        raise ConfigError(
            f"loss={spec.name}: its reward shift is the mean reward seen in training, kept in a run's "
            f"checkpoints only: evaluate a checkpoint ({checkpoints})"
        )


def recorded_loss_options(run_dir: Path) -> dict[str, Any] | None:
    """The loss options a finished run trained with, `auto` ones as chosen (its summary.json)."""
    try:
        return json.loads((run_dir / SUMMARY).read_text()).get("loss_options")
    except (OSError, ValueError):
        return None


def run_evaluation(cfg: DictConfig, overrides: Sequence[str], run: str | None, given: Sequence[str]) -> str:
    """Plan, evaluate, write the record atomically; the result block that names its file."""
    plan = evaluation_plan(cfg, overrides, run, given)
    with offline_when_local(plan.cfg):
        record = evaluate(plan.cfg, plan.source, named_set=plan.named_set)
    suffix = plan.suffix + (f"-{setup_digest(record)}" if plan.suffix_from_setup else "")
    path = write_evaluation(record, evaluation_path(record, plan.folder, suffix=suffix))
    return evaluation_result(record, str(path))
