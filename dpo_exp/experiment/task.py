"""A task: its problems in disjoint splits, and the reward that labels samples (and, unless
`evaluate.reward` names another, evaluates them).

The problems come from `task.problems`, a `module:function` called as (count, **task.options):
the arithmetic and GSM8K generators, or `dpo_exp.tasks.prompts:problems` for any prompt set. The
reward is a `Reward` (dpo_exp/models/reward.py): a `module:function` verifier, or a sequence
classifier by path or hub id whose `reward_output` is the score, run on the accelerator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from dpo_exp.devices import device_type
from dpo_exp.models.reward import FunctionReward, Reward, load_reward
from dpo_exp.tasks import Problem, load_function

# Disjoint problem sets, drawn in this order (a new split goes last, so the others stay the same).
SPLITS = ("eval", "tune", "sft", "sample", "sample_val", "sft_check")
# Completions a classifier scores at once: a throughput setting, which changes no score.
REWARD_BATCH_SIZE = 64


def container(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def reward_from(section: DictConfig) -> Reward:
    """The reward a config section (`task` or `evaluate`) names by `reward`, with its
    `reward_output` and `reward_revision` where set; a classifier goes on the accelerator."""
    options = {
        key: section[f"reward_{key}"] for key in ("output", "revision") if section.get(f"reward_{key}")
    }
    return load_reward(section.reward, **options, device=device_type("auto"), batch_size=REWARD_BATCH_SIZE)


@dataclass(frozen=True)
class Task:
    """A task's problems in disjoint splits (fixed by its options, not the run seed), and its reward.

    `settings` are what they were made from (generator, options, split sizes, reward; a
    classifier's digest, which covers its weights and output): every stage that reads the problems
    or the reward has them in its key."""

    problems: dict[str, list[Problem]]
    reward: Reward
    settings: dict[str, Any]

    @classmethod
    def from_config(cls, task_cfg: DictConfig) -> Task:
        settings = {key: container(task_cfg[key]) for key in ("problems", "options", "splits", "reward")}
        reward = reward_from(task_cfg)
        if not isinstance(reward, FunctionReward):  # a function's settings stay as they were: same keys
            settings["reward_digest"] = reward.digest
        sizes = {split: int(task_cfg.splits[split]) for split in SPLITS}
        make = load_function(task_cfg.problems)
        problems = make(sum(sizes.values()), **container(task_cfg.options))
        splits, start = {}, 0
        for split in SPLITS:
            splits[split] = problems[start : start + sizes[split]]
            start += sizes[split]
        return cls(splits, reward, settings)

    @property
    def has_demonstrations(self) -> bool:
        return all(problem.answer is not None for problem in self.problems["sft"])


def evaluation_reward(cfg: DictConfig, task: Task) -> Reward:
    """What the evaluation scores with: `evaluate.reward` (a held-out reward, for a gold-versus-proxy
    study), or with null the task's own."""
    if cfg.evaluate.get("reward") is None:
        return task.reward
    return reward_from(cfg.evaluate)
