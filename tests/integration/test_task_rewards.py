"""The task's reward is a `Reward`: the arithmetic task's samples, pairs and evaluation figures are
the ones the per-completion verifier gave before, and a classifier labels samples in batches."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from dpo_exp.data.collate import pad_sequences
from dpo_exp.experiment.evaluate import evaluate_policy
from dpo_exp.experiment.sample import sample_and_label, write_split
from dpo_exp.experiment.stages import draw_samples, load_model_folder, sample_settings
from dpo_exp.experiment.task import Task, evaluation_reward
from dpo_exp.models.reward import ClassifierReward, FunctionReward, load_reward
from dpo_exp.tasks import arithmetic
from tests.conftest import tiny_llama_config
from tests.helpers import SMALL_EXPERIMENT, compose_config

# Pinned from the code before the reward became a `Reward` (per-completion calls of the verifier),
# on this tiny model: a Llama of seed 0 given 60 steps on 64 problems, against one of seed 1.
SAMPLE_FILES = {
    "pairs.jsonl": "b0fee43236c44a63",
    "pairs_val.jsonl": "e542ae15468f5b31",
    "rft.jsonl": "dfb34e8017ba12ae",
    "rft_val.jsonl": "ec6ada8fca5c276e",
    "samples.jsonl": "a8e910be51b4aacd",
    "samples_val.jsonl": "652092f7549f86b3",
    "unpaired.jsonl": "8806f5d42da3c0a1",
    "unpaired_val.jsonl": "916a76e961d6febc",
}
TRAIN_STATS = {"prompts": 8, "samples": 32, "mean_reward": 0.3229166666666667, "prompts_with_pair": 7,
               "prompts_all_pass": 0, "prompts_all_fail": 3, "cut": 0, "pairs": 21, "unpaired": 32,
               "rft": 7}  # fmt: skip
PARTIAL_CREDIT = {"true_reward": 0.22916666666666669, "true_reward_greedy": 0.20833333333333331,
                  "kl": 15.80385971069336}  # fmt: skip
SAMPLED = [1, 1, 1, 0, 1, 1, 0, 0, 2, 0, 0, 1, 1, 0, 1, 1]  # thirds: each prompt's sampled reward
VERIFIER = {"true_reward": 0.0, "true_reward_greedy": 0.0, "kl": 15.80385971069336}


def trained_a_little(tokenizer, steps: int = 60):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_llama_config(tokenizer))
    problems = arithmetic.problems(64, digits=2, seed=99)
    prompts = [tokenizer.encode(p.prompt, add_special_tokens=True) for p in problems]
    answers = [
        tokenizer.encode(p.answer, add_special_tokens=False) + [tokenizer.eos_token_id] for p in problems
    ]
    batch = pad_sequences(prompts, answers, tokenizer.pad_token_id)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@pytest.fixture(scope="module")
def policy_dirs(tmp_path_factory, char_tokenizer) -> dict[str, Path]:
    folders = {}
    for name in ("policy", "reference"):
        folder = tmp_path_factory.mktemp(name)
        if name == "policy":
            model = trained_a_little(char_tokenizer)
        else:
            torch.manual_seed(1)
            model = AutoModelForCausalLM.from_config(tiny_llama_config(char_tokenizer))
        model.save_pretrained(folder)
        char_tokenizer.save_pretrained(folder)
        folders[name] = folder
    return folders


SMALL = [*SMALL_EXPERIMENT, "task.splits.sample=8", "task.splits.sample_val=4", "task.splits.eval=16"]


def test_the_arithmetic_tasks_samples_and_pairs_are_unchanged(policy_dirs, tmp_path):
    cfg = compose_config(SMALL, fast=False)
    task = Task.from_config(cfg.task)
    assert isinstance(task.reward, FunctionReward)
    assert "reward_digest" not in task.settings  # a function's stage keys are what they were
    draw_samples(sample_settings(cfg, task, "pinned", 0), task, policy_dirs["policy"], tmp_path)
    digests = {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()[:16] for path in tmp_path.glob("*.jsonl")
    }
    assert digests == SAMPLE_FILES
    stats = json.loads((tmp_path / "stats.json").read_text())["train"]
    assert {key: value for key, value in stats.items() if key != "seconds"} == TRAIN_STATS


def test_the_arithmetic_tasks_evaluation_figures_are_unchanged(policy_dirs):
    verifier = "dpo_exp.tasks.arithmetic:reward"
    cfg = compose_config([*SMALL, f"evaluate.reward={verifier}"], fast=False)
    task = Task.from_config(cfg.task)
    held_out = evaluation_reward(cfg, task)
    assert held_out.name == verifier and held_out is not task.reward
    tokenizer, policy = load_model_folder(policy_dirs["policy"])
    _, reference = load_model_folder(policy_dirs["reference"])
    options = {"max_new_tokens": 6, "batch_size": 32, "seed": 1234}
    for reward, pinned in ((task.reward, PARTIAL_CREDIT), (held_out, VERIFIER)):
        metrics = evaluate_policy(policy, reference, tokenizer, task.problems["eval"], reward, **options)
        sampled = metrics.pop("sampled_rewards")
        assert metrics == pytest.approx(pinned, abs=1e-6)
        if pinned is PARTIAL_CREDIT:
            assert sampled == pytest.approx([third / 3 for third in SAMPLED])


def test_a_classifier_labels_samples_in_batches(policy_dirs, tiny_classifier_dir, tmp_path):
    tokenizer, policy = load_model_folder(policy_dirs["policy"])
    reward = load_reward(str(tiny_classifier_dir), output="prob:POSITIVE", batch_size=3)
    assert isinstance(reward, ClassifierReward)
    calls = []
    score = reward._score
    reward._score = lambda *args: calls.append(len(args[0])) or score(*args)
    problems = arithmetic.problems(4, digits=2, seed=0)
    options = {"num_samples": 4, "temperature": 1.0, "top_p": 1.0, "max_new_tokens": 6, "batch_size": 8}
    labelled = sample_and_label(policy, tokenizer, problems, reward, **options)
    assert calls == [16]  # every sample of every prompt scored in one call, batched inside
    for item in labelled:
        alone = load_reward(str(tiny_classifier_dir), output="prob:POSITIVE")
        expected = alone.score([item.prompt] * 4, item.completions)
        assert item.rewards == pytest.approx(expected, abs=1e-5)
        assert all(0.0 < value < 1.0 for value in item.rewards)
    stats = write_split(tmp_path, "train", labelled, mode="all", threshold=0.5)
    assert stats["samples"] == 16 and stats["pairs"] > 0
