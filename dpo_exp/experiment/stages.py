"""The experiment's cached stages: the SFT model, its labelled samples, and its own evaluation.

Each stage lives under `cache_dir` by a key of the settings that determine it, so every member of
a β or loss sweep with the same SFT and sampling settings shares one SFT checkpoint and one set of
samples. An online round's samples depend on its run and are kept in the run's own folder.

A stage's settings are one object, built once by its `*_settings` function from the config and the
task: it is hashed into the key and it is the only config its builder reads (the task's problems
and reward come from `Task`, whose own settings are part of it), so a key cannot leave out an
input. Display options (progress bars, log intervals) are passed beside it and change no key.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf

from dpo_exp.console import detail, progress, stage
from dpo_exp.devices import device_type
from dpo_exp.errors import ConfigError
from dpo_exp.experiment.cache import StageResult, cached_stage
from dpo_exp.experiment.evaluate import evaluate_policy
from dpo_exp.experiment.sample import (
    STATS,
    Labelled,
    check_scores_vary,
    format_stats,
    sample_and_label,
    short_stats,
    write_split,
)
from dpo_exp.experiment.sft import (
    CompetenceStop,
    SupervisedModule,
    optim_settings,
    supervised_loader,
    tokenize_demonstrations,
)
from dpo_exp.experiment.task import Task, container
from dpo_exp.experiment.vllm_sampling import VLLM_KEYS, uses_vllm, vllm_draws
from dpo_exp.models.loading import freeze, load_policy, load_pretrained, load_tokenizer
from dpo_exp.models.reward import Reward
from dpo_exp.training.metrics_file import MetricsLogger
from dpo_exp.training.progress import StepProgressBar

MODEL_DIR = "model"
SFT_STATS = "sft_stats.json"  # the SFT stage's target, the step that reached it, every check
ROUND_SAMPLES = "round_samples"  # a later round's samples, drawn from the previous round's policy
# In the sample stage's key: bumped when its files change (2: rft rows carry a label; 3: the KTO
# examples are every sample as drawn, not the distinct ones; 4: samples cut at max_new_tokens are
# marked cut).
SAMPLE_FORMAT = 4
# In the SFT evaluation's key: bumped when its files change (2: per-prompt sampled rewards).
REFERENCE_EVAL_FORMAT = 2


def load_model_folder(model_dir: Path) -> tuple[Any, Any]:
    """(tokenizer, frozen model) from a folder written by `save_pretrained`, on the accelerator
    where there is one: sampling and evaluation are most of a stage's work."""
    model_cfg = OmegaConf.create({"path": str(model_dir)})
    model = freeze(load_pretrained(str(model_dir), model_cfg, dtype=None))
    return load_tokenizer(model_cfg), model.to(device_type("auto"))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# -- stage 1: SFT ----------------------------------------------------------------------------


def sft_settings(cfg: DictConfig, task: Task) -> DictConfig:
    """Everything the SFT stage reads, its competence checks included (the reward, the answer
    length and batch they sample with)."""
    return OmegaConf.create(
        {
            "task": task.settings,
            "model": container(cfg.model),
            "sft": container(cfg.sft),
            "lengths": {"max_length": cfg.data.max_length, "max_prompt_length": cfg.data.max_prompt_length},
            "check": {"max_new_tokens": cfg.task.max_new_tokens, "batch_size": cfg.evaluate.batch_size},
        }
    )


def sft_stage(cfg: DictConfig, task: Task) -> StageResult:
    """The SFT checkpoint (`<folder>/model`) for these task, model and SFT settings."""
    settings = sft_settings(cfg, task)
    if int(cfg.sft.steps) > 0 and not task.has_demonstrations:
        raise ConfigError(
            f"sft.steps={cfg.sft.steps}: task {cfg.task.name} has no demonstrations to train on "
            "(a prompt set without task.options.demonstration_field); sft.steps=0 takes the model as it is"
        )
    display = {
        "progress_bar": bool(cfg.trainer.enable_progress_bar),
        "log_every": cfg.trainer.log_every_n_steps,
    }
    start = time.perf_counter()
    build = lambda folder: build_sft(settings, task, folder, **display)  # noqa: E731
    result = cached_stage(Path(cfg.cache_dir), "sft", container(settings), build)
    stage("sft", f"{built(result, start)} {result.path} ({sft_summary(sft_stats(result), task)})")
    return result


def sft_summary(stats: dict[str, Any], task: Task) -> str:
    """`412 steps on 4000 demonstrations, sampled reward 0.5 reached at step 400`."""
    if stats.get("steps") == 0:
        return "sft.steps=0: the model as it is"
    text = f"{stats.get('steps', '?')} steps on {len(task.problems['sft'])} demonstrations"
    if stats.get("reached_at_step") is not None:
        text += f", sampled reward {stats['target_reward']:g} reached at step {stats['reached_at_step']}"
    return text


def built(result: StageResult, start: float) -> str:
    """`reused` or `built in 12 s`, for a stage's line."""
    return "reused" if result.reused else f"built in {time.perf_counter() - start:.0f} s"


def build_sft(settings: DictConfig, task: Task, folder: Path, *, progress_bar: bool, log_every: int) -> None:
    """Fine-tune on the demonstrations until the sampled reward reaches sft.target_reward, at most
    sft.steps steps (every step, without a target); refuse a model that missed its target. With
    sft.steps=0 the model is saved as it is: the "SFT model" of a task without demonstrations."""
    sft = settings.sft
    L.seed_everything(sft.seed, workers=True, verbose=False)
    tokenizer = load_tokenizer(settings.model)
    policy = load_policy(settings.model, tokenizer)
    if int(sft.steps) == 0:
        (folder / SFT_STATS).write_text(json.dumps({"steps": 0, "target_reward": None}, indent=2))
        policy.save_pretrained(folder / MODEL_DIR)
        tokenizer.save_pretrained(folder / MODEL_DIR)
        return
    demos = [(p.prompt, p.answer) for p in task.problems["sft"]]
    examples = tokenize_demonstrations(demos, tokenizer, settings.lengths)
    module = SupervisedModule(policy, optim=optim_settings(sft))
    stop = competence_stop(settings, task, tokenizer)
    trainer = L.Trainer(
        # One device: Lightning's `auto` takes every visible GPU with DDP, whose started ranks would
        # wait on the stage lock this process holds. The demonstrations' model is small.
        devices=1,
        max_steps=int(sft.steps),
        logger=MetricsLogger(folder),
        callbacks=([] if stop is None else [stop]) + ([StepProgressBar("sft")] if progress_bar else []),
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=progress_bar,
        gradient_clip_val=1.0,
        deterministic=True,
        log_every_n_steps=log_every,
        limit_val_batches=0,
        default_root_dir=str(folder),
    )
    loader = supervised_loader(examples, tokenizer.pad_token_id, int(sft.batch_size), seed=sft.seed)
    trainer.fit(module, train_dataloaders=loader)
    stats = {"steps": trainer.global_step, "target_reward": sft.target_reward}
    if stop is not None:
        stats.update(reached_at_step=stop.reached_at, checks=stop.history)
        if stop.reached_at is None:
            best = max(reward for _, reward in stop.history) if stop.history else float("nan")
            raise ValueError(
                f"the SFT stage reached a sampled reward of {best:.3f} at most in sft.steps="
                f"{sft.steps} steps, short of sft.target_reward={sft.target_reward}: "
                "raise sft.steps or lower the target"
            )
    (folder / SFT_STATS).write_text(json.dumps(stats, indent=2))
    policy.save_pretrained(folder / MODEL_DIR)
    tokenizer.save_pretrained(folder / MODEL_DIR)


def competence_stop(settings: DictConfig, task: Task, tokenizer: Any) -> CompetenceStop | None:
    if settings.sft.target_reward is None:
        return None
    return CompetenceStop(
        tokenizer,
        task.problems["sft_check"],
        task.reward,
        target=float(settings.sft.target_reward),
        every=int(settings.sft.check_every),
        max_new_tokens=int(settings.check.max_new_tokens),
        batch_size=int(settings.check.batch_size),
    )


def sft_stats(sft: StageResult) -> dict[str, Any]:
    """What the SFT stage recorded: steps trained, its target and the step that reached it."""
    path = sft.path / SFT_STATS
    return json.loads(path.read_text()) if path.exists() else {}


# -- stage 2: sample and label ---------------------------------------------------------------


def sample_settings(cfg: DictConfig, task: Task, model: str, seed: int) -> DictConfig:
    """Everything a sample stage reads: the model sampled (the SFT stage's key, or a round's policy
    folder), the draws' seed, the sampling and labelling settings."""
    return OmegaConf.create(
        {
            "model": model,
            "seed": seed,
            "task": task.settings,
            "sample": sample_section(cfg.sample),
            "max_new_tokens": cfg.task.max_new_tokens,
            "pass_threshold": cfg.task.pass_threshold,
            "format": SAMPLE_FORMAT,
        }
    )


def sample_section(sample_cfg: DictConfig) -> dict[str, Any]:
    """The `sample` settings of a stage's key: all of them with vLLM (another backend draws other
    samples); with `generate` (hf) those only vLLM reads left out, so hf keys are what they were."""
    section = container(sample_cfg)
    if uses_vllm(sample_cfg):
        return section
    return {key: value for key, value in section.items() if key not in VLLM_KEYS}


def sample_stage(cfg: DictConfig, task: Task, sft: StageResult) -> StageResult:
    """The SFT model's labelled samples and the training sets made from them."""
    settings = sample_settings(cfg, task, sft.path.name, int(cfg.seed))
    build = lambda folder: draw_samples(settings, task, sft.path / MODEL_DIR, folder)  # noqa: E731
    start = time.perf_counter()
    result = cached_stage(Path(cfg.cache_dir), "sample", container(settings), build)
    announce_samples(result, start)
    return result


def resample_stage(
    cfg: DictConfig, task: Task, policy_dir: Path, run_dir: Path, round_number: int
) -> StageResult:
    """An online round's samples: the same prompts, drawn afresh from the previous round's policy."""
    seed = int(cfg.seed) + 1000 * (round_number - 1)
    settings = sample_settings(cfg, task, str(policy_dir), seed)
    build = lambda folder: draw_samples(settings, task, policy_dir, folder)  # noqa: E731
    start = time.perf_counter()
    result = cached_stage(run_dir, ROUND_SAMPLES, container(settings), build)
    announce_samples(result, start)
    return result


@contextlib.contextmanager
def sampler(settings: DictConfig, task: Task, model_dir: Path) -> Iterator[Callable[..., list[Labelled]]]:
    """The draws of `sample.backend`, as `(problems, bar) -> labelled samples`: `generate` on the
    model loaded here, or vLLM on the saved folder (`vllm_sampling`)."""
    sample = settings.sample
    options = {
        "num_samples": int(sample.num_samples),
        "temperature": float(sample.temperature),
        "top_p": float(sample.top_p),
        "max_new_tokens": int(settings.max_new_tokens),
    }
    if uses_vllm(sample):
        tokenizer = load_tokenizer(OmegaConf.create({"path": str(model_dir)}))
        with vllm_draws(model_dir, tokenizer, task.reward, sample, options, int(settings.seed)) as draw:
            yield draw
        return
    tokenizer, model = load_model_folder(model_dir)
    yield lambda problems, bar: sample_and_label(
        model, tokenizer, problems, task.reward, batch_size=int(sample.batch_size), bar=bar, **options
    )


def draw_samples(settings: DictConfig, task: Task, model_dir: Path, folder: Path) -> None:
    with sampler(settings, task, model_dir) as draw:
        L.seed_everything(int(settings.seed), workers=True, verbose=False)
        stats = {split: draw_split(settings, task, draw, split, folder) for split in ("train", "val")}
    (folder / STATS).write_text(json.dumps(stats, indent=2))


def draw_split(
    settings: DictConfig, task: Task, draw: Callable[..., list[Labelled]], split: str, folder: Path
) -> dict[str, Any]:
    """One split's samples, labelled and written; its counts and seconds."""
    sample = settings.sample
    start = time.perf_counter()
    problems = task.problems["sample" if split == "train" else "sample_val"]
    with progress(total=len(problems), desc=f"sample {split}", unit="prompts") as bar:
        labelled = draw(problems, bar)
    check_scores_vary(labelled, task.reward.name, split)
    stats = write_split(
        folder,
        split,
        labelled,
        mode=sample.pair_mode,
        threshold=float(settings.pass_threshold),
        min_margin=float(sample.min_margin),
    )
    stats["seconds"] = time.perf_counter() - start
    return stats


def announce_samples(result: StageResult, start: float) -> None:
    """The stage's line, with how many prompts gave a pair; the full counts when verbose."""
    stats = json.loads((result.path / STATS).read_text())
    stage("sample", f"{built(result, start)} {result.path} ({short_stats(stats)})")
    for split, split_stats in stats.items():
        detail(format_stats(split_stats, split))


# -- the SFT model's own evaluation (the reference figures of every run) ---------------------


def eval_options(cfg: DictConfig) -> dict[str, int]:
    return {
        "max_new_tokens": int(cfg.task.max_new_tokens),
        "batch_size": int(cfg.evaluate.batch_size),
        "seed": int(cfg.evaluate.seed),
    }


def reference_eval_settings(
    cfg: DictConfig, task: Task, sft: StageResult, reward: Reward | None = None
) -> DictConfig:
    """Everything the SFT model's evaluation reads: the model, the prompts and reward, the options.
    `reward`: a held-out evaluation reward (`evaluate.reward`), in the key by its digest."""
    settings = {
        "sft": sft.path.name,
        "task": task.settings,
        "split": str(cfg.evaluate.split),
        "options": eval_options(cfg),
    }
    if reward is not None and reward is not task.reward:
        settings["reward"] = {"name": reward.name, "digest": reward.digest}
    return OmegaConf.create(settings)


def reference_eval_stage(
    cfg: DictConfig, task: Task, sft: StageResult, reward: Reward | None = None
) -> dict[str, float]:
    """True reward and KL of the SFT model itself, on the evaluation split, scored by `reward`
    (the task's own when None)."""
    reward = reward or task.reward
    settings = reference_eval_settings(cfg, task, sft, reward)

    def build(folder: Path) -> None:
        tokenizer, model = load_model_folder(sft.path / MODEL_DIR)
        problems, options = task.problems[settings.split], container(settings.options)
        metrics = evaluate_policy(model, model, tokenizer, problems, reward, **options)
        (folder / "metrics.json").write_text(json.dumps(metrics, indent=2))

    start = time.perf_counter()
    result = cached_stage(Path(cfg.cache_dir), "reference_eval", container(settings), build)
    metrics = json.loads((result.path / "metrics.json").read_text())
    figures = f"true reward {metrics['true_reward']:.3f}, greedy {metrics['true_reward_greedy']:.3f}"
    where = f"{len(task.problems[cfg.evaluate.split])} {cfg.evaluate.split} prompts, by {reward.name}"
    stage("sft-eval", f"{built(result, start)} {result.path} ({figures} on {where})")
    return metrics
