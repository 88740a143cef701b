"""Generation scored by a reward, on a run on a fixed dataset (`evaluate.reward=<spec>`).

At step 0, at every validation and at the end, one completion per prompt is sampled from the policy
on the first `evaluate.prompts` distinct prompts of the validation split (the same draws every
time, from `evaluate.seed`; training's RNG untouched), and once, at the first evaluation, from the
reference. Every sample is scored by the reward, and the run logs `eval/reward` (mean),
`eval/win_rate` with `eval/win_rate_ci95_low`/`_high` (against the reference's sample on the same
prompt), `eval/kl` (KL(policy ‖ reference) from the policy's samples) and `eval/length`; the
estimators are in `generation_figures.py`. The reference is the run's reference model; where the run
has none in memory (a reference-free loss, the reference cache) it is a frozen copy of the initial
policy (or `model.ref_path`); for LoRA without `ref_path`, the policy with its adapter off.

The reward reads each prompt as the policy saw it (its tokens decoded, special tokens left out).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import pandas as pd
from omegaconf import DictConfig
from transformers import PreTrainedModel

from dpo_exp.console import warn
from dpo_exp.data.collate import IndexedItem
from dpo_exp.experiment.evaluate import completion_logps, sample_once
from dpo_exp.experiment.generation import decode, in_batches_that_fit
from dpo_exp.experiment.generation_figures import kl_estimate, mean, win_rate
from dpo_exp.experiment.sample_table import write_sample_table
from dpo_exp.models.loading import load_reference, load_tokenizer
from dpo_exp.models.lora import reference_mode
from dpo_exp.models.reward import load_reward
from dpo_exp.models.score_cache import CachedReward
from dpo_exp.training.metrics_file import METRICS, read_metrics

SCORE_CACHE = Path("cache") / "reward_scores"  # under output_root


def distinct_prompts(items: list[IndexedItem], count: int) -> list[tuple[list[int], Any]]:
    """The first `count` distinct prompts, in the split's order: (the ids the policy reads, the
    prompt as the data wrote it, text or messages, which the reward reads)."""
    seen: dict[tuple[int, ...], tuple[list[int], Any]] = {}
    for item in items:
        ids = item.record.prompt_ids
        seen.setdefault(tuple(ids), (ids, item.record.prompt))
        if len(seen) == count:
            break
    return list(seen.values())


def reference_words(run_reference: Any, own_reference: Any, model_cfg: DictConfig) -> str:
    """Which model the evaluation's reference is, for the summary."""
    if run_reference is not None:
        return "the run's reference model"
    if own_reference is None:
        return "the policy with its adapter off (LoRA)"
    if model_cfg.get("ref_path") is not None:
        return f"model.ref_path ({model_cfg.ref_path})"
    return "a frozen copy of the initial policy"


class GenerationEval(L.Callback):
    """Samples, scores and logs `eval/...` at every validation; `record` becomes summary["generation"]."""

    def __init__(
        self,
        reward: CachedReward,
        tokenizer: Any,
        model_cfg: DictConfig,
        *,
        prompts: int,
        temperature: float,
        max_new_tokens: int,
        batch_size: int,
        seed: int,
        run_dir: Path | None = None,
        table_every: int = 1,
        table_size: int = 8,
    ) -> None:
        self.reward = reward
        self.tokenizer = tokenizer
        self.model_cfg = model_cfg
        self.count = prompts
        self.sampling = {
            "temperature": temperature,
            "max_new_tokens": max_new_tokens,
            "batch_size": batch_size,
        }
        self.batch_size = batch_size
        self.seed = seed
        self.run_dir = run_dir
        self.table_every = table_every
        self.table_size = table_size
        self.prompt_ids: list[list[int]] = []
        self.prompts: list[str] = []
        self.written_prompts: list[Any] = []
        self.own_reference: PreTrainedModel | None = None
        self.reference_samples: list[str] | None = None
        self.reference_scores: list[float] | None = None
        self.evaluations = 0
        self.warned_constant = False
        self.record: dict[str, Any] = {
            "reward": reward.name,
            "reward_digest": reward.digest,
            "temperature": temperature,
            "max_new_tokens": max_new_tokens,
            "seed": seed,
        }

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Before a checkpoint is restored: the prompts, and the reference copied from the initial policy."""
        if stage != "fit" or self.prompt_ids:
            return
        self.use_prompts(distinct_prompts(trainer.datamodule.data.validation.items, self.count))
        if pl_module.reference is None:
            self.own_reference = load_reference(self.model_cfg, pl_module.policy)
        described = reference_words(pl_module.reference, self.own_reference, self.model_cfg)
        self.record.update(prompts=len(self.prompt_ids), reference=described)

    def use_prompts(self, prompts: list[tuple[list[int], Any]]) -> None:
        """The prompts to sample: (the ids the policy reads, the prompt as the data wrote it, or None)."""
        self.prompt_ids = [ids for ids, _ in prompts]
        self.prompts = [decode(self.tokenizer, ids) for ids in self.prompt_ids]  # as the policy reads them
        # A reward model reads the prompt as written, in its own chat template, not in the policy's.
        self.written_prompts = [
            text if written is None else written
            for text, (_, written) in zip(self.prompts, prompts, strict=True)
        ]

    @contextlib.contextmanager
    def reference(self, pl_module: L.LightningModule) -> Iterator[PreTrainedModel]:
        if pl_module.reference is not None:
            yield pl_module.reference
        elif self.own_reference is not None:
            yield self.own_reference.to(next(pl_module.policy.parameters()).device)
        else:
            with reference_mode(pl_module.policy):
                yield pl_module.policy

    def score(self, texts: list[str]) -> list[float]:
        """The reward of each text as a completion of its prompt, in batches the device has memory for."""
        rows = list(zip(self.written_prompts, texts, strict=True))
        return in_batches_that_fit(
            rows,
            self.batch_size,
            lambda batch: self.reward.score([p for p, _ in batch], [c for _, c in batch]),
        )

    def evaluate(self, pl_module: L.LightningModule) -> tuple[dict[str, float], list[dict[str, Any]]]:
        """The figures, and the rows of a sample table (prompt, both samples, both scores)."""
        policy = pl_module.policy
        self.reward.to(next(policy.parameters()).device)
        samples = sample_once(policy, self.tokenizer, self.prompt_ids, seed=self.seed, **self.sampling)
        pad_id = self.tokenizer.pad_token_id
        policy_logps = completion_logps(policy, self.prompt_ids, samples, pad_id, self.batch_size)
        with self.reference(pl_module) as reference:
            if self.reference_samples is None:  # frozen: its draws are the same at every evaluation
                drawn = sample_once(
                    reference, self.tokenizer, self.prompt_ids, seed=self.seed, **self.sampling
                )
                self.reference_samples = [decode(self.tokenizer, ids) for ids in drawn]
            reference_logps = completion_logps(reference, self.prompt_ids, samples, pad_id, self.batch_size)
        texts = [decode(self.tokenizer, ids) for ids in samples]
        scores = self.score(texts)
        if self.reference_scores is None:
            self.reference_scores = self.score(self.reference_samples)
        self.warn_if_constant(scores + self.reference_scores)
        figures = {
            "reward": mean(scores),
            **win_rate(scores, self.reference_scores),
            "kl": kl_estimate(policy_logps, reference_logps),
            "length": mean([len(ids) for ids in samples]),
        }
        rows = [
            {
                "prompt": p,
                "policy_sample": c,
                "policy_reward": s,
                "reference_sample": rc,
                "reference_reward": rs,
            }
            for p, c, s, rc, rs in zip(
                self.prompts, texts, scores, self.reference_samples, self.reference_scores, strict=True
            )
        ]
        return figures, rows

    def warn_if_constant(self, scores: list[float]) -> None:
        if self.warned_constant or len(set(scores)) > 1:
            return
        self.warned_constant = True
        warn(
            f"reward {self.reward.name} gave every sample the same score ({scores[0]:g}): its mean and win "
            "rate say nothing about the policy (check evaluate.reward and evaluate.reward_output)"
        )

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        figures, rows = self.evaluate(pl_module)
        for name, value in figures.items():
            pl_module.log(f"eval/{name}", value, prog_bar=name == "reward")
        entry = {"step": trainer.global_step, **figures}
        if trainer.global_step == 0:
            self.record["step0"] = entry
        elif self.evaluations == 0 and (logged := logged_at_step_zero(self.run_dir)) is not None:
            self.record["step0"] = logged  # a resumed run: its first launch evaluated step 0, once
        self.record["final"] = entry
        self.evaluations += 1
        if self.table_every and self.evaluations % self.table_every == 0 and trainer.is_global_zero:
            write_sample_table(trainer, self.run_dir, rows[: self.table_size])


def logged_at_step_zero(run_dir: Path | None) -> dict[str, Any] | None:
    """The `eval/*` figures metrics.csv holds for step 0, where an earlier launch of the run logged them."""
    path = None if run_dir is None else run_dir / METRICS
    if path is None or not path.exists():
        return None
    rows = read_metrics(path)
    if "eval/reward" not in rows.columns:
        return None
    start = rows[(rows["step"] == 0) & rows["eval/reward"].notna()]
    if start.empty:
        return None
    row = start.iloc[0]
    names = [column for column in rows.columns if column.startswith("eval/") and pd.notna(row[column])]
    return {"step": 0, **{name.removeprefix("eval/"): float(row[name]) for name in names}}


def generation_eval(cfg: DictConfig, run_dir: Path) -> GenerationEval:
    """The evaluation `cfg.evaluate` describes, its reward loaded now: a bad one stops the run before
    any model trains."""
    evaluate = cfg.evaluate
    reward = load_reward(
        str(evaluate.reward),
        output=str(evaluate.reward_output),
        revision=evaluate.get("reward_revision"),
        batch_size=int(evaluate.batch_size),
    )
    return GenerationEval(
        CachedReward(reward, Path(cfg.output_root) / SCORE_CACHE),
        load_tokenizer(cfg.model),
        cfg.model,
        prompts=int(evaluate.prompts),
        temperature=float(evaluate.temperature),
        max_new_tokens=int(evaluate.max_new_tokens),
        batch_size=int(evaluate.batch_size),
        seed=int(evaluate.seed),
        run_dir=run_dir,
        table_every=int(evaluate.table_every),
        table_size=int(evaluate.table_size),
    )
