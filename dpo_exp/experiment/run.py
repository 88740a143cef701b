"""`run_experiment(cfg, run_dir)`: the built-in experiment, from a task to a trained, measured policy.

It builds (or reuses) the SFT model and its labelled samples, then hands each training run its
inputs: the SFT checkpoint as model and reference, the sampled file the loss trains on (pairs,
unpaired examples, or with `loss=rft` the passing samples) and a callback that measures true reward
and KL. With `online.rounds` > 1, each later round samples from the policy the previous one made;
every round is measured on the same held-out prompts and pairs, against the SFT model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, open_dict

from dpo_exp.console import stage
from dpo_exp.data.sources import load_records
from dpo_exp.data.tokenize import TokenizedPair, tokenize_records
from dpo_exp.errors import ConfigError
from dpo_exp.experiment.cache import StageResult
from dpo_exp.experiment.evaluate import TrueRewardEval
from dpo_exp.experiment.sample import STATS, split_files
from dpo_exp.experiment.stages import (
    MODEL_DIR,
    Task,
    eval_options,
    load_model_folder,
    read_jsonl,
    reference_eval_stage,
    resample_stage,
    sample_stage,
    sft_stage,
    sft_stats,
)
from dpo_exp.experiment.task import evaluation_reward
from dpo_exp.losses import LossSpec, get_loss
from dpo_exp.models.reward import FunctionReward, Reward
from dpo_exp.training import EXPORT_DIR, train, write_failure
from dpo_exp.training.result import figure_rows, footer, rule, what_ran
from dpo_exp.training.run_files import SUMMARY
from dpo_exp.training.schedule import warmup_steps

EVAL_KEYS = ("true_reward", "true_reward_greedy", "kl")
ROUND_KEYS = (*EVAL_KEYS, "logratio/chosen", "logratio/rejected")  # listed in the last round's summary
ROUNDS_DIR = "rounds"  # <run>/rounds/<n>: the runs of online rounds before the last


def run_experiment(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Build or reuse the stages, train into `run_dir`, and return the summary (with the SFT figures)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        task = Task.from_config(cfg.task)
        reward = evaluation_reward(cfg, task)
        if reward is not task.reward or not isinstance(task.reward, FunctionReward):
            # Said where it is news: a classifier, or a held-out reward (the result block names it too).
            held_out = "" if reward is task.reward else " (held out)"
            stage("reward", f"labels: {task.reward.name}; evaluation: {reward.name}{held_out}")
        sft = sft_stage(cfg, task)
        sample = sample_stage(cfg, task, sft)
        reference = reference_eval_stage(cfg, task, sft, reward)
        held_out_pairs = drift_pair_file(sample)
        extra = {
            "reference": {f"eval/{key}": reference[key] for key in EVAL_KEYS},
            "stages": {
                "sft": {"path": str(sft.path), "reused": sft.reused, **sft_stats(sft)},
                "sample": {"path": str(sample.path), "reused": sample.reused},
            },
            "evaluation": {
                "split": cfg.evaluate.split,
                "prompts": len(task.problems[cfg.evaluate.split]),
                "drift_pairs": str(held_out_pairs),
                "reward": reward.name,
            },
            "rewards": {"labels": task.reward.name, "evaluation": reward.name},
        }
        sft_model = (sft, reference["sampled_rewards"])
        return train_rounds(cfg, (task, reward), sft_model, sample, run_dir, extra)
    except BaseException as error:
        write_failure(run_dir, error)
        raise


def training_data_kind(spec: LossSpec) -> str:
    """Which of the sample stage's training sets a loss trains on."""
    if spec.positives_only:
        return "rft"
    return "pairs" if spec.paired else "unpaired"


def training_config(
    cfg: DictConfig, sft: StageResult, sample: StageResult, policy_dir: Path | None = None
) -> DictConfig:
    """The run's config with the SFT checkpoint as the model and a sampled file as the data.

    An online round after the first starts from `policy_dir` (the previous round's policy),
    against the SFT model as reference or, with `online.reference=previous`, against its start.
    """
    spec = get_loss(cfg.loss.name)
    kind = training_data_kind(spec)
    for split in ("train", "val"):
        if not read_jsonl(sample.path / split_files(split)[kind]):
            raise ConfigError(
                f"no prompt of the {split} split gave a usable {kind} example (see [sample] above): "
                "train the SFT model longer, or draw more samples (sample.num_samples)"
            )
    run_cfg = cfg.copy()
    with open_dict(run_cfg):
        run_cfg.run_name = cfg.run_name  # named by what the user asked for, not by the SFT checkpoint's path
        run_cfg.model.path = str(sft.path / MODEL_DIR)
        if policy_dir is not None:
            run_cfg.model.path = str(policy_dir)
            run_cfg.model.ref_path = str(sft.path / MODEL_DIR) if cfg.online.reference == "sft" else None
        run_cfg.data.source = "pairs" if kind == "pairs" else "unpaired"
        run_cfg.data.options = {}
        run_cfg.data.train_path = str(sample.path / split_files("train")[kind])
        run_cfg.data.validation_path = str(sample.path / split_files("val")[kind])
    return run_cfg


def eval_callback(
    cfg: DictConfig,
    task: Task,
    reward: Reward,
    sft: StageResult,
    pair_file: Path,
    run_dir: Path,
    reference_rewards: list[float],
) -> TrueRewardEval:
    """True reward, KL, the gain over the SFT model's per-prompt `reference_rewards` and the log-prob
    drift on `pair_file`'s pairs, each against the SFT model (whatever reference the round trains
    against), scored by `reward`; sample tables go to `run_dir`."""
    tokenizer, reference = load_model_folder(sft.path / MODEL_DIR)
    return TrueRewardEval(
        reference,
        tokenizer,
        task.problems[cfg.evaluate.split],
        reward,
        drift_pairs(cfg, pair_file, tokenizer),
        reference_rewards=reference_rewards,
        **eval_options(cfg),
        run_dir=run_dir,
        table_every=int(cfg.evaluate.table_every),
        table_size=int(cfg.evaluate.table_size),
    )


def drift_pair_file(sample: StageResult) -> Path:
    """The pairs every round's log-prob drift is measured on: the first sample stage's validation
    pairs (the SFT model's samples on the `sample_val` prompts). A later round's own validation
    pairs come from its starting policy, so drift on them would not compare across rounds."""
    return sample.path / split_files("val")["pairs"]


def drift_pairs(cfg: DictConfig, pair_file: Path, tokenizer: Any) -> list[TokenizedPair]:
    """The held-out pairs of `pair_file`, tokenised: the log-prob drift is measured on them."""
    records = load_records("pairs", str(pair_file))  # as a training run reads it, cut marks included
    data = cfg.data
    kept, _ = tokenize_records(
        records, tokenizer, max_length=data.max_length, max_prompt_length=data.max_prompt_length
    )
    return kept


def train_rounds(
    cfg: DictConfig,
    task_rewards: tuple[Task, Reward],
    sft_model: tuple[StageResult, list[float]],
    sample: StageResult,
    run_dir: Path,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """`online.rounds` training runs, each on samples of the policy the previous one produced.
    `task_rewards` is the task and the evaluation's reward; `sft_model` is the SFT stage and its
    per-prompt sampled rewards (every round's gain is paired against them).

    Rounds before the last are whole runs in `<run>/rounds/<n>/` (their exported policy starts
    the next round); the last round is this run. Its summary lists every round's figures. A
    resumed run keeps the rounds that had finished and continues the one that had not.

    Each round is a new `train` call: a fresh optimizer, and the learning-rate schedule restarted
    (`optim.warmup_steps` of warmup, then `optim.scheduler` over `trainer.max_steps`) from the
    round's starting policy. Each round is a new optimisation problem, on new samples against a
    possibly new reference (`online.reference=previous`), as in iterative RPO (Pang et al. 2024),
    where each iteration is trained as a new run starting from the previous iteration's model.
    Every round is evaluated on the same prompts and the same held-out pairs, against the SFT model.
    """
    rounds = int(cfg.online.rounds)
    task, reward = task_rewards
    sft, sft_rewards = sft_model
    history: list[dict[str, Any]] = []
    policy_dir = None
    pair_file = drift_pair_file(sample)  # the first stage's: the same held-out pairs in every round
    for number in range(1, rounds + 1):
        last = number == rounds
        round_dir = run_dir if last else run_dir / ROUNDS_DIR / str(number)
        if policy_dir is not None:
            sample = resample_stage(cfg, task, policy_dir, round_dir, number)
        run_cfg = training_config(cfg, sft, sample, policy_dir)
        with open_dict(run_cfg):
            run_cfg.export.save = run_cfg.export.save or not last  # the next round starts from this export
        round_extra = round_summary(cfg, extra, sample, number, history)
        if cfg.resume is not None and not last and (round_dir / SUMMARY).exists():
            summary = json.loads((round_dir / SUMMARY).read_text())  # finished before the run was resumed
        else:
            callback = eval_callback(cfg, task, reward, sft, pair_file, round_dir, sft_rewards)
            # validate_at_start=False: the SFT model's figures (the baseline) are the experiment's step 0.
            summary = train(run_cfg, round_dir, [callback], round_extra, validate_at_start=False)
        history.append(round_figures(number, summary))
        policy_dir = round_dir / EXPORT_DIR
        if rounds > 1:
            figures = ", ".join(f"{k} {v:.3f}" for k, v in history[-1].items() if k.startswith("eval/"))
            stage("online", f"round {number} of {rounds}: {figures}")
    return summary


def round_summary(
    cfg: DictConfig, extra: dict[str, Any], sample: StageResult, number: int, history: list[dict[str, Any]]
) -> dict[str, Any]:
    """What a round adds to its summary: its samples; with several rounds, its number, the earlier
    rounds' figures and its learning-rate schedule (restarted each round, see `train_rounds`)."""
    round_extra = {
        **extra,
        "stages": {**extra["stages"], "sample": {"path": str(sample.path), "reused": sample.reused}},
        "sample_stats": json.loads((sample.path / STATS).read_text()),
    }
    if int(cfg.online.rounds) > 1:
        schedule = {
            "restarted": "each round",
            "scheduler": str(cfg.optim.scheduler),
            "warmup_steps": warmup_steps(cfg.optim, int(cfg.trainer.max_steps)),
            "max_steps": int(cfg.trainer.max_steps),
        }
        round_extra.update(round=number, rounds=list(history), lr_schedule=schedule)
    return round_extra


def round_figures(number: int, summary: dict[str, Any]) -> dict[str, Any]:
    """One online round's headline figures, for the last round's summary."""
    metrics = summary["metrics"]
    figures = {f"eval/{key}": metrics[f"eval/{key}"] for key in ROUND_KEYS if f"eval/{key}" in metrics}
    return {"round": number, "run_dir": summary["run_dir"], **figures}


# metric -> its label with units, in the order the result block shows them
EXPERIMENT_FIGURES = {
    "eval/true_reward": "true reward, one sample at T=1 (mean reward)",
    "eval/true_reward_greedy": "true reward, greedy (mean reward)",
    "eval/kl": "KL(policy || SFT), nats per answer",
}


def experiment_result(cfg: DictConfig, summary: dict[str, Any], seconds: float) -> str:
    """The result block: the policy's true reward and KL beside the SFT model's, with the change."""
    metrics, reference = summary["metrics"], summary["reference"]
    evaluation = summary.get("evaluation", {})
    where = f" on {evaluation['prompts']} {evaluation['split']} prompts" if evaluation else ""
    where += f" by {evaluation['reward']}" if evaluation.get("reward") else ""
    rows = [(f"measured{where}", ["policy", "SFT", "change"])]
    for key, label in EXPERIMENT_FIGURES.items():
        value = metrics.get(key, float("nan"))
        change = value - reference[key]
        change = 0.0 if abs(change) < 5e-4 else change  # no "-0.000"
        rows.append((label, [f"{value:.3f}", f"{reference[key]:.3f}", f"{change:+.3f}"]))
    if "eval/gain/mean" in metrics:
        interval = f"[{metrics['eval/gain/ci95_low']:+.3f}, {metrics['eval/gain/ci95_high']:+.3f}]"
        rows.append(
            (
                "gain over SFT, paired over prompts (95% interval)",
                [f"{metrics['eval/gain/mean']:+.3f}", interval],
            )
        )
    if "val/rewards/accuracy" in metrics:
        rows.append(("held-out pairs ranked right (fraction)", [f"{metrics['val/rewards/accuracy']:.3f}"]))
    rounds = [
        f"{entry['eval/true_reward']:.3f}"
        for entry in summary.get("rounds", [])
        if "eval/true_reward" in entry
    ]
    if rounds:
        rows.append(("true reward after each earlier round", rounds))
    lines = [rule("result"), what_ran(cfg, summary, seconds), *figure_rows(rows), *footer(summary)]
    return "\n".join(lines)
