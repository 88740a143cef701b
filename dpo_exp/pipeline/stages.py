"""The pipeline's stages over one config: SFT, sample and label, reference evaluation, training.

Stages 1-2 (and the SFT model's own evaluation) are cached under `cache_dir` by a key of the settings
that determine them, so every member of a β or loss sweep with the same SFT and sampling settings
shares one SFT checkpoint and one set of samples.
"""

from __future__ import annotations

import json
import time
from functools import cached_property
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.loggers import CSVLogger
from omegaconf import DictConfig, OmegaConf, open_dict

from dpo_exp.cli import build_trainer, run
from dpo_exp.config import ConfigError, validate_config
from dpo_exp.data.records import PreferencePair
from dpo_exp.data.tokenize import TokenizedPair, tokenize_records
from dpo_exp.export import EXPORT_DIR
from dpo_exp.models import freeze, load_policy, load_pretrained, load_tokenizer
from dpo_exp.pipeline.cache import StageResult, cached_stage
from dpo_exp.pipeline.evaluate import TrueRewardEval, evaluate_policy
from dpo_exp.pipeline.generation import load_function
from dpo_exp.pipeline.sample import (
    PAIR_MODES,
    STATS,
    format_stats,
    sample_and_label,
    split_files,
    write_split,
)
from dpo_exp.pipeline.sft import (
    SupervisedModule,
    optim_settings,
    supervised_loader,
    tokenize_demonstrations,
)
from dpo_exp.run_files import (
    SUMMARY,
    config_hash,
    library_versions,
    write_json_atomically,
    write_resolved_config,
)
from dpo_exp.tasks import Problem

SPLITS = ("eval", "tune", "sft", "sample", "sample_val")  # disjoint problem sets, drawn in this order
METHODS = ("preference", "rft")
MODEL_DIR = "model"
EVAL_KEYS = ("true_reward", "true_reward_greedy", "kl")
ONLINE_REFERENCES = ("sft", "previous")  # the reference of online rounds after the first
ROUNDS_DIR = "rounds"  # <run>/rounds/<n>: the runs of online rounds before the last
ROUND_SAMPLES = "round_samples"  # a later round's samples, drawn from the previous round's policy


def container(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def validate_pipeline(cfg: DictConfig) -> None:
    """Checks of the pipeline's own settings, before anything is built."""
    if cfg.method not in METHODS:
        raise ConfigError(f"method must be one of {', '.join(METHODS)}, got {cfg.method!r}")
    if cfg.sample.pair_mode not in PAIR_MODES:
        raise ConfigError(
            f"sample.pair_mode must be one of {', '.join(PAIR_MODES)}, got {cfg.sample.pair_mode!r}"
        )
    validate_online(cfg)
    if cfg.evaluate.split not in ("eval", "tune"):
        raise ConfigError(f"evaluate.split must be eval (held out) or tune, got {cfg.evaluate.split!r}")
    validate_task(cfg)
    validate_config(cfg)


def validate_task(cfg: DictConfig) -> None:
    for split in SPLITS:
        if int(cfg.task.splits[split]) <= 0:
            raise ConfigError(f"task.splits.{split} must be a positive integer")
    for key in ("problems", "reward"):
        try:
            load_function(cfg.task[key])
        except (ValueError, ImportError) as error:
            raise ConfigError(f"task.{key}: {error}") from error


def validate_online(cfg: DictConfig) -> None:
    if int(cfg.online.rounds) < 1:
        raise ConfigError(f"online.rounds must be at least 1, got {cfg.online.rounds}")
    if int(cfg.online.rounds) > 1 and cfg.method != "preference":
        raise ConfigError("online.rounds > 1 resamples for preference training; method=rft runs one round")
    if cfg.online.reference not in ONLINE_REFERENCES:
        raise ConfigError(
            f"online.reference must be one of {', '.join(ONLINE_REFERENCES)}, got {cfg.online.reference!r}"
        )


class PipelineContext:
    """One config's view of the pipeline: its problems, its cached stages, its run folder."""

    def __init__(self, cfg: DictConfig, run_dir: Path) -> None:
        validate_pipeline(cfg)
        self.cfg = cfg
        self.run_dir = run_dir
        self.cache_dir = Path(cfg.cache_dir)
        self.reward = load_function(cfg.task.reward)

    @cached_property
    def problems(self) -> dict[str, list[Problem]]:
        """The task's problems cut into disjoint splits (fixed by the task's options, not the run seed)."""
        sizes = {split: int(self.cfg.task.splits[split]) for split in SPLITS}
        make = load_function(self.cfg.task.problems)
        problems = make(sum(sizes.values()), **container(self.cfg.task.options))
        splits, start = {}, 0
        for split in SPLITS:
            splits[split] = problems[start : start + sizes[split]]
            start += sizes[split]
        return splits

    # -- stage 1: SFT ------------------------------------------------------------------------

    def sft_settings(self) -> dict[str, Any]:
        cfg = self.cfg
        return {
            "task": {k: container(cfg.task[k]) for k in ("name", "problems", "options", "splits")},
            "model": container(cfg.model),
            "sft": container(cfg.sft),
            "lengths": [cfg.data.max_length, cfg.data.max_prompt_length],
        }

    def sft(self) -> StageResult:
        result = cached_stage(self.cache_dir, "sft", self.sft_settings(), self._build_sft)
        print(f"[sft] {'reused' if result.reused else 'built'} {result.path}")
        return result

    def _build_sft(self, folder: Path) -> None:
        cfg = self.cfg
        L.seed_everything(cfg.sft.seed, workers=True, verbose=False)
        tokenizer = load_tokenizer(cfg.model)
        policy = load_policy(cfg.model, tokenizer)
        demos = [(p.prompt, p.answer) for p in self.problems["sft"]]
        examples = tokenize_demonstrations(demos, tokenizer, cfg.data)
        module = SupervisedModule(policy, optim=optim_settings(cfg.sft))
        trainer = L.Trainer(
            max_steps=int(cfg.sft.steps),
            logger=CSVLogger(save_dir=folder, name="", version=""),
            enable_checkpointing=False,
            enable_model_summary=False,
            enable_progress_bar=cfg.trainer.enable_progress_bar,
            gradient_clip_val=1.0,
            deterministic=True,
            log_every_n_steps=cfg.trainer.log_every_n_steps,
            limit_val_batches=0,
            default_root_dir=str(folder),
        )
        loader = supervised_loader(
            examples, tokenizer.pad_token_id, int(cfg.sft.batch_size), seed=cfg.sft.seed
        )
        trainer.fit(module, train_dataloaders=loader)
        policy.save_pretrained(folder / MODEL_DIR)
        tokenizer.save_pretrained(folder / MODEL_DIR)

    def load_sft(self, path: Path) -> tuple[Any, Any]:
        """(tokenizer, frozen SFT model) from the SFT stage's folder."""
        return load_model_folder(path / MODEL_DIR)

    # -- stage 2: sample and label -----------------------------------------------------------

    def sample(self, sft: StageResult) -> StageResult:
        settings = {
            "sft": sft.path.name,
            "seed": self.cfg.seed,  # the sampling draws
            "sample": container(self.cfg.sample),
            "reward": self.cfg.task.reward,
            "pass_threshold": self.cfg.task.pass_threshold,
            "max_new_tokens": self.cfg.task.max_new_tokens,
        }
        result = cached_stage(
            self.cache_dir,
            "sample",
            settings,
            lambda folder: self._draw_samples(sft.path / MODEL_DIR, folder, seed=self.cfg.seed),
        )
        print_sample_stats(result)
        return result

    def resample(self, policy_dir: Path, run_dir: Path, round_number: int) -> StageResult:
        """An online round's samples: the same prompts, drawn afresh from the previous round's policy.

        Kept in the round's own folder (they depend on this run's training), built like any stage.
        """
        seed = int(self.cfg.seed) + 1000 * (round_number - 1)
        settings = {
            "policy": str(policy_dir),
            "round": round_number,
            "seed": seed,
            "sample": container(self.cfg.sample),
        }
        result = cached_stage(
            run_dir, ROUND_SAMPLES, settings, lambda folder: self._draw_samples(policy_dir, folder, seed=seed)
        )
        print_sample_stats(result)
        return result

    def _draw_samples(self, model_dir: Path, folder: Path, *, seed: int) -> None:
        cfg = self.cfg
        tokenizer, model = load_model_folder(model_dir)
        L.seed_everything(seed, workers=True, verbose=False)
        stats = {}
        for split in ("train", "val"):
            problems = self.problems["sample" if split == "train" else "sample_val"]
            start = time.perf_counter()
            labelled = sample_and_label(
                model,
                tokenizer,
                problems,
                self.reward,
                num_samples=int(cfg.sample.num_samples),
                temperature=float(cfg.sample.temperature),
                top_p=float(cfg.sample.top_p),
                max_new_tokens=int(cfg.task.max_new_tokens),
                batch_size=int(cfg.sample.batch_size),
            )
            stats[split] = write_split(
                folder, split, labelled, mode=cfg.sample.pair_mode, threshold=float(cfg.task.pass_threshold)
            )
            stats[split]["seconds"] = time.perf_counter() - start
        (folder / STATS).write_text(json.dumps(stats, indent=2))

    # -- the SFT model's own evaluation (the reference figures of every run) -----------------

    def eval_problems(self) -> list[Problem]:
        return self.problems[self.cfg.evaluate.split]

    def eval_options(self) -> dict[str, int]:
        evaluate = self.cfg.evaluate
        return {
            "max_new_tokens": int(self.cfg.task.max_new_tokens),
            "batch_size": int(evaluate.batch_size),
            "seed": int(evaluate.seed),
        }

    def reference_eval(self, sft: StageResult) -> dict[str, float]:
        settings = {"sft": sft.path.name, "split": self.cfg.evaluate.split, **self.eval_options()}

        def build(folder: Path) -> None:
            tokenizer, model = self.load_sft(sft.path)
            metrics = evaluate_policy(
                model, model, tokenizer, self.eval_problems(), self.reward, **self.eval_options()
            )
            (folder / "metrics.json").write_text(json.dumps(metrics, indent=2))

        result = cached_stage(self.cache_dir, "reference_eval", settings, build)
        return json.loads((result.path / "metrics.json").read_text())

    # -- stage 3: train, evaluating at intervals ---------------------------------------------

    def eval_callback(
        self, sft: StageResult, sample: StageResult, run_dir: Path | None = None
    ) -> TrueRewardEval:
        """True reward and KL against the SFT model; sample tables go to `run_dir` (this run's)."""
        tokenizer, reference = self.load_sft(sft.path)
        return TrueRewardEval(
            reference,
            tokenizer,
            self.eval_problems(),
            self.reward,
            self.drift_pairs(sample, tokenizer),
            **self.eval_options(),
            run_dir=run_dir or self.run_dir,
            table_every=int(self.cfg.evaluate.table_every),
            table_size=int(self.cfg.evaluate.table_size),
        )

    def drift_pairs(self, sample: StageResult, tokenizer: Any) -> list[TokenizedPair]:
        rows = read_jsonl(sample.path / split_files("val")["pairs"])
        records = [PreferencePair(row["prompt"], row["chosen"], row["rejected"]) for row in rows]
        data = self.cfg.data
        kept, _ = tokenize_records(
            records, tokenizer, max_length=data.max_length, max_prompt_length=data.max_prompt_length
        )
        return kept

    def preference_config(
        self, sft: StageResult, sample: StageResult, policy_dir: Path | None = None
    ) -> DictConfig:
        """The run's config with the SFT checkpoint as the model and the sampled data as the data.

        An online round after the first starts from `policy_dir` (the previous round's policy),
        against the SFT model as reference or, with `online.reference=previous`, against its start.
        """
        cfg = self.cfg.copy()
        paired = validate_config(cfg).paired
        kind = "pairs" if paired else "unpaired"
        for split in ("train", "val"):
            if not read_jsonl(sample.path / split_files(split)[kind]):
                raise ValueError(
                    f"no prompt of the {split} split gave a usable {kind} example (see [sample] above): "
                    "train the SFT model longer, or draw more samples (sample.num_samples)"
                )
        with open_dict(cfg):
            cfg.model.path = str(sft.path / MODEL_DIR)
            if policy_dir is not None:
                cfg.model.path = str(policy_dir)
                cfg.model.ref_path = str(sft.path / MODEL_DIR) if cfg.online.reference == "sft" else None
            cfg.data.source = kind
            cfg.data.options = {}
            cfg.data.train_path = str(sample.path / split_files("train")[kind])
            cfg.data.validation_path = str(sample.path / split_files("val")[kind])
        return cfg

    def train(self, sft: StageResult, sample: StageResult, extra: dict[str, Any]) -> dict[str, Any]:
        callback = self.eval_callback(sft, sample)
        if self.cfg.method == "rft":
            return self.train_rft(sft, sample, callback, extra)
        if int(self.cfg.online.rounds) > 1:
            return self.train_online(sft, sample, extra)
        return run(
            self.preference_config(sft, sample), self.run_dir, callbacks=[callback], extra_summary=extra
        )

    def train_online(self, sft: StageResult, sample: StageResult, extra: dict[str, Any]) -> dict[str, Any]:
        """`online.rounds` rounds: each trains on samples of the policy the previous one produced.

        Rounds before the last are whole runs in `<run>/rounds/<n>/` (their exported policy starts
        the next round); the last round is this run. Its summary lists every round's figures.
        """
        rounds = int(self.cfg.online.rounds)
        history: list[dict[str, Any]] = []
        policy_dir = None
        for number in range(1, rounds + 1):
            last = number == rounds
            round_dir = self.run_dir if last else self.run_dir / ROUNDS_DIR / str(number)
            if policy_dir is not None:
                sample = self.resample(policy_dir, round_dir, number)
            cfg = self.preference_config(sft, sample, policy_dir)
            with open_dict(cfg):
                cfg.export.save = cfg.export.save or not last  # the next round starts from this export
            round_extra = {
                **extra,
                "round": number,
                "stages": {**extra["stages"], "sample": {"path": str(sample.path), "reused": sample.reused}},
                "sample_stats": json.loads((sample.path / STATS).read_text()),
                "rounds": list(history),  # the earlier rounds' figures
            }
            summary = run(
                cfg,
                round_dir,
                callbacks=[self.eval_callback(sft, sample, round_dir)],
                extra_summary=round_extra,
            )
            history.append(round_figures(number, summary))
            policy_dir = round_dir / EXPORT_DIR
            print(
                f"[online] round {number}/{rounds}: "
                + ", ".join(f"{k} {v:.3f}" for k, v in history[-1].items() if k.startswith("eval/"))
            )
        return summary

    def train_rft(
        self, sft: StageResult, sample: StageResult, callback: TrueRewardEval, extra: dict[str, Any]
    ) -> dict[str, Any]:
        """Rejection-sampling fine-tuning: the supervised loss on the passing samples."""
        cfg = self.cfg
        start = time.perf_counter()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_resolved_config(cfg, self.run_dir)
        L.seed_everything(cfg.seed, workers=True, verbose=False)
        tokenizer, _ = self.load_sft(sft.path)
        policy = load_pretrained(str(sft.path / MODEL_DIR), OmegaConf.create({}), dtype=None)
        loaders = [
            supervised_loader(
                tokenize_demonstrations(self.rft_examples(sample, split), tokenizer, cfg.data),
                tokenizer.pad_token_id,
                int(batch_size),
                seed=cfg.seed if split == "train" else None,
            )
            for split, batch_size in (("train", cfg.data.batch_size), ("val", cfg.data.eval_batch_size))
        ]
        module = SupervisedModule(policy, optim=container(cfg.optim))
        trainer = build_trainer(cfg, self.run_dir, callbacks=[callback])
        trainer.fit(module, *loaders)
        if trainer.global_step % int(cfg.trainer.val_check_interval) != 0:
            trainer.validate(module, loaders[1], verbose=False)
        summary = {
            "run_name": cfg.run_name,
            "run_dir": str(self.run_dir),
            "loss": "rft",
            "seed": int(cfg.seed),
            "config_hash": config_hash(cfg),
            "global_step": trainer.global_step,
            "metrics": {name: float(value) for name, value in sorted(trainer.callback_metrics.items())},
            "wall_time_s": time.perf_counter() - start,
            "versions": library_versions(),
            **extra,
        }
        write_json_atomically(summary, self.run_dir / SUMMARY)
        return summary

    def rft_examples(self, sample: StageResult, split: str) -> list[tuple[str, str]]:
        rows = read_jsonl(sample.path / split_files(split)["rft"])
        if not rows:
            raise ValueError(f"no sample passed the verifier in the {split} split: nothing to fine-tune on")
        return [(row["prompt"], row["completion"]) for row in rows]


def round_figures(number: int, summary: dict[str, Any]) -> dict[str, Any]:
    """One online round's headline figures, for the last round's summary."""
    metrics = summary["metrics"]
    figures = {f"eval/{key}": metrics[f"eval/{key}"] for key in EVAL_KEYS if f"eval/{key}" in metrics}
    return {"round": number, "run_dir": summary["run_dir"], **figures}


def print_sample_stats(result: StageResult) -> None:
    stats = json.loads((result.path / STATS).read_text())
    for split, split_stats in stats.items():
        print(f"[sample] {'reused' if result.reused else 'built'} " + format_stats(split_stats, split))


def load_model_folder(model_dir: Path) -> tuple[Any, Any]:
    """(tokenizer, frozen model) from a folder written by `save_pretrained`."""
    model_cfg = OmegaConf.create({"path": str(model_dir)})
    return load_tokenizer(model_cfg), freeze(load_pretrained(str(model_dir), model_cfg, dtype=None))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
