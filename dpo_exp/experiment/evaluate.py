"""Held-out evaluation against the task's true reward, and how far the policy moved from the reference.

The reward is a `Reward`: the task's own, or `evaluate.reward` (a held-out one); it scores every
completion of an evaluation in one call.

- `true_reward`: mean reward of one sample per prompt at temperature 1 (the policy's own distribution);
- `true_reward_greedy`: mean reward of the greedy completion;
- `kl`: KL(policy || reference), estimated from those same samples as the mean over prompts of the
  sequence log-ratio sum_t [log policy(y_t | ...) - log reference(y_t | ...)];
- `logratio/chosen`, `logratio/rejected`: mean policy - reference log-prob of held-out preference
  pairs' chosen and rejected completions (the drift that shows likelihood displacement);
- `gain/mean`, `gain/ci95_low`, `gain/ci95_high`: the sampled true reward's gain over the SFT
  model, paired over the prompts (each prompt's policy reward minus the SFT model's, both drawn
  with the same seed), with its 95% interval (normal approximation: mean ± 1.96 standard errors).

Every `table_every` evaluations, a sample table (prompt, policy sample, reference sample, rewards)
of the first `table_size` prompts goes to `<run>/samples/step_<step>.jsonl` and, with W&B, to a
W&B table `eval/samples`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from transformers import PreTrainedModel

from dpo_exp.console import progress
from dpo_exp.data.collate import pad_sequences
from dpo_exp.data.tokenize import TokenizedPair
from dpo_exp.experiment.generation import decode, encode_prompts, generate_completions, in_batches_that_fit
from dpo_exp.experiment.sample_table import write_sample_table
from dpo_exp.losses.logprobs import sequence_logps
from dpo_exp.models.reward import Reward
from dpo_exp.tasks import Problem


@torch.no_grad()
def completion_logps(
    model: PreTrainedModel,
    prompt_ids: list[list[int]],
    completion_ids: list[list[int]],
    pad_id: int,
    batch_size: int = 256,
) -> torch.Tensor:
    """(N,) summed log-probs of each completion given its prompt."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device

    def score(rows: list[tuple[list[int], list[int]]]) -> list[torch.Tensor]:
        batch = pad_sequences([prompt for prompt, _ in rows], [completion for _, completion in rows], pad_id)
        batch = {name: tensor.to(device) for name, tensor in batch.items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return [sequence_logps(logits, batch["labels"])[0].cpu()]

    values = in_batches_that_fit(list(zip(prompt_ids, completion_ids, strict=True)), batch_size, score)
    model.train(was_training)
    return torch.cat(values)


def sample_once(
    model: PreTrainedModel, tokenizer: Any, prompt_ids: list[list[int]], *, seed: int, **options: Any
) -> list[list[int]]:
    """One sample per prompt, from `seed`: the same draws at every evaluation, training's RNG untouched."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return [rows[0] for rows in generate_completions(model, tokenizer, prompt_ids, **options)]


def evaluate_policy(
    policy: PreTrainedModel,
    reference: PreTrainedModel,
    tokenizer: Any,
    problems: list[Problem],
    reward: Reward,
    *,
    max_new_tokens: int,
    batch_size: int,
    seed: int,
) -> dict[str, float]:
    """True reward (sampled and greedy) of `policy` on `problems`, and KL(policy || reference)."""
    prompt_ids = encode_prompts(tokenizer, [problem.prompt for problem in problems])
    with progress(total=2 * len(prompt_ids), desc="evaluate", unit="prompts") as bar:
        options = {"max_new_tokens": max_new_tokens, "batch_size": batch_size, "bar": bar}
        sampled = sample_once(policy, tokenizer, prompt_ids, seed=seed, **options)
        greedy = [
            rows[0] for rows in generate_completions(policy, tokenizer, prompt_ids, greedy=True, **options)
        ]
    pad_id = tokenizer.pad_token_id
    log_ratio = completion_logps(policy, prompt_ids, sampled, pad_id, batch_size) - completion_logps(
        reference, prompt_ids, sampled, pad_id, batch_size
    )
    sampled_rewards = rewards_of(problems, sampled, tokenizer, reward)
    return {
        "true_reward": mean(sampled_rewards),
        "true_reward_greedy": mean(rewards_of(problems, greedy, tokenizer, reward)),
        "kl": float(log_ratio.mean()),
        "sampled_rewards": sampled_rewards,  # per prompt, for the paired interval (not a metric)
    }


def rewards_of(
    problems: list[Problem], completions: list[list[int]], tokenizer: Any, reward: Reward
) -> list[float]:
    """One reward per completion, scored in one call (a classifier batches them)."""
    texts = [decode(tokenizer, ids) for ids in completions]
    return reward.score([p.prompt for p in problems], texts, [p.answer for p in problems])


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def paired_gain(policy: list[float], reference: list[float]) -> dict[str, float]:
    """Mean of the per-prompt differences and its 95% interval (mean ± 1.96 standard errors)."""
    differences = torch.tensor(policy, dtype=torch.float64) - torch.tensor(reference, dtype=torch.float64)
    centre = float(differences.mean())
    error = float(differences.std(correction=1)) / len(differences) ** 0.5 if len(differences) > 1 else 0.0
    return {
        "gain/mean": centre,
        "gain/ci95_low": centre - 1.96 * error,
        "gain/ci95_high": centre + 1.96 * error,
    }


def logprob_drift(
    policy: PreTrainedModel, reference: PreTrainedModel, pairs: list[TokenizedPair], pad_id: int
) -> dict[str, float]:
    """Mean policy - reference log-prob of the chosen and of the rejected completions."""
    prompts = [pair.prompt_ids for pair in pairs]
    drift = {}
    for name in ("chosen", "rejected"):
        completions = [getattr(pair, f"{name}_ids") for pair in pairs]
        ratio = completion_logps(policy, prompts, completions, pad_id) - completion_logps(
            reference, prompts, completions, pad_id
        )
        drift[f"logratio/{name}"] = float(ratio.mean())
    return drift


def sample_rows(
    policy: PreTrainedModel,
    reference: PreTrainedModel,
    tokenizer: Any,
    problems: list[Problem],
    reward: Reward,
    *,
    max_new_tokens: int,
    seed: int,
) -> list[dict[str, Any]]:
    """One sample per prompt from the policy and from the reference (same draws), with rewards."""
    prompt_ids = encode_prompts(tokenizer, [problem.prompt for problem in problems])
    options = {"max_new_tokens": max_new_tokens}
    samples = {
        name: [
            decode(tokenizer, ids) for ids in sample_once(model, tokenizer, prompt_ids, seed=seed, **options)
        ]
        for name, model in (("policy", policy), ("reference", reference))
    }
    prompts, answers = [p.prompt for p in problems], [p.answer for p in problems]
    rewards = {name: reward.score(prompts, texts, answers) for name, texts in samples.items()}
    return [
        {
            "prompt": prompt,
            "policy_sample": samples["policy"][index],
            "policy_reward": rewards["policy"][index],
            "reference_sample": samples["reference"][index],
            "reference_reward": rewards["reference"][index],
        }
        for index, prompt in enumerate(prompts)
    ]


class TrueRewardEval(L.Callback):
    """At every validation (the interval is the trainer's val_check_interval), logs `eval/...`."""

    def __init__(
        self,
        reference: PreTrainedModel,
        tokenizer: Any,
        problems: list[Problem],
        reward: Reward,
        drift_pairs: list[TokenizedPair],
        *,
        reference_rewards: list[float] | None = None,
        max_new_tokens: int,
        batch_size: int,
        seed: int,
        run_dir: Path | None = None,
        table_every: int = 0,
        table_size: int = 8,
    ) -> None:
        self.run_dir = run_dir
        self.table_every = table_every
        self.table_size = table_size
        self.evaluations = 0
        self.reference = reference
        self.tokenizer = tokenizer
        self.problems = problems
        self.reward = reward
        self.drift_pairs = drift_pairs
        self.reference_rewards = reference_rewards  # the SFT model's per prompt: the gain is paired
        self.options = {"max_new_tokens": max_new_tokens, "batch_size": batch_size, "seed": seed}

    def evaluate(self, policy: PreTrainedModel) -> dict[str, float]:
        self.reference.to(next(policy.parameters()).device)
        metrics = evaluate_policy(
            policy, self.reference, self.tokenizer, self.problems, self.reward, **self.options
        )
        sampled_rewards = metrics.pop("sampled_rewards")
        if self.reference_rewards is not None:
            metrics.update(paired_gain(sampled_rewards, self.reference_rewards))
        if self.drift_pairs:
            metrics.update(
                logprob_drift(policy, self.reference, self.drift_pairs, self.tokenizer.pad_token_id)
            )
        return metrics

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        for name, value in self.evaluate(pl_module.policy).items():
            pl_module.log(f"eval/{name}", value, prog_bar=name == "true_reward")
        self.evaluations += 1
        if self.table_every and self.evaluations % self.table_every == 0 and trainer.is_global_zero:
            self.write_sample_table(trainer, pl_module.policy)

    def write_sample_table(self, trainer: L.Trainer, policy: PreTrainedModel) -> None:
        rows = sample_rows(
            policy,
            self.reference,
            self.tokenizer,
            self.problems[: self.table_size],
            self.reward,
            max_new_tokens=self.options["max_new_tokens"],
            seed=self.options["seed"],
        )
        write_sample_table(trainer, self.run_dir, rows)
