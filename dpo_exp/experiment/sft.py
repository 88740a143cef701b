"""Supervised fine-tuning on demonstrations (the NLL of completions): the experiment's SFT stage.

(RFT, fine-tuning on passing samples, is a loss of the training run: `loss=rft`.)
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader
from transformers import PreTrainedModel

from dpo_exp.data.collate import pad_sequences
from dpo_exp.data.records import UnpairedExample
from dpo_exp.data.tokenize import TokenizedUnpaired, tokenize_records
from dpo_exp.experiment.evaluate import mean, rewards_of, sample_once
from dpo_exp.experiment.generation import encode_prompts
from dpo_exp.losses.logprobs import sequence_logps
from dpo_exp.models.reward import Reward
from dpo_exp.tasks import Problem
from dpo_exp.training.module import PreferenceModule


class SupervisedModule(L.LightningModule):
    """Minimises the per-token NLL of completions given their prompts."""

    def __init__(self, policy: PreTrainedModel, *, optim: dict[str, Any]) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["policy"])
        self.policy = policy
        self.optim = optim

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        logits = self.policy(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        logps, ntokens = sequence_logps(logits, batch["labels"])
        loss = -logps.sum() / ntokens.sum()
        self.log("train/nll", loss.detach(), batch_size=int(batch["input_ids"].shape[0]), prog_bar=True)
        return loss

    def configure_optimizers(self) -> dict[str, Any]:
        # The same AdamW and schedule as preference training: it reads only policy, optim and trainer.
        return PreferenceModule.configure_optimizers(self)


def tokenize_demonstrations(
    examples: list[tuple[str, str]], tokenizer: Any, data_cfg: Any
) -> list[TokenizedUnpaired]:
    records = [UnpairedExample(prompt, completion, desirable=True) for prompt, completion in examples]
    kept, _ = tokenize_records(
        records, tokenizer, max_length=data_cfg.max_length, max_prompt_length=data_cfg.max_prompt_length
    )
    return kept


def supervised_loader(
    examples: list[TokenizedUnpaired], pad_id: int, batch_size: int, *, seed: int | None
) -> DataLoader:
    """Shuffled from `seed` when training (seed given); in order otherwise."""

    def collate(items: list[TokenizedUnpaired]) -> dict[str, torch.Tensor]:
        return pad_sequences([e.prompt_ids for e in items], [e.completion_ids for e in items], pad_id)

    generator = None if seed is None else torch.Generator().manual_seed(seed)
    return DataLoader(
        examples,
        batch_size=batch_size,
        shuffle=seed is not None,
        drop_last=seed is not None and len(examples) >= batch_size,
        collate_fn=collate,
        generator=generator,
    )


def optim_settings(stage_cfg: Any) -> dict[str, Any]:
    """An `optim` dict for the shared optimizer set-up from a stage's lr / warmup / schedule."""
    return {
        "lr": float(stage_cfg.lr),
        "weight_decay": 0.0,
        "betas": [0.9, 0.999],
        "eps": 1e-8,
        "warmup_steps": int(stage_cfg.warmup_steps),
        "scheduler": stage_cfg.scheduler,
        "master_weights": True,  # bf16 weights (model.dtype=bfloat16) keep their small updates here too
    }


class CompetenceStop(L.Callback):
    """Stop SFT once the model is competent: every `every` steps, sample one completion per held-out
    prompt (fixed draws, training's RNG untouched) and stop when the mean true reward reaches
    `target`. A fixed step count would land elsewhere on another CPU's float rounding; a reward
    target lands on the same competence. `history` keeps (step, reward) of every check.
    """

    def __init__(
        self,
        tokenizer: Any,
        problems: list[Problem],
        reward: Reward,
        *,
        target: float,
        every: int,
        max_new_tokens: int,
        batch_size: int,
        seed: int = 0,
    ) -> None:
        self.tokenizer, self.problems, self.reward = tokenizer, problems, reward
        self.prompt_ids = encode_prompts(tokenizer, [problem.prompt for problem in problems])
        self.target, self.every, self.seed = target, every, seed
        self.options = {"max_new_tokens": max_new_tokens, "batch_size": batch_size}
        self.history: list[tuple[int, float]] = []
        self.reached_at: int | None = None

    def measure(self, policy: PreTrainedModel) -> float:
        samples = sample_once(policy, self.tokenizer, self.prompt_ids, seed=self.seed, **self.options)
        return mean(rewards_of(self.problems, samples, self.tokenizer, self.reward))

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        step = trainer.global_step
        if step % self.every:
            return
        reward = self.measure(pl_module.policy)
        self.history.append((step, reward))
        if reward >= self.target:
            self.reached_at = step
            trainer.should_stop = True
