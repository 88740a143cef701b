"""The task's reward is a `Reward`: the arithmetic task's samples, pairs and evaluation figures are
the ones the per-completion verifier gave before, and a classifier labels samples in batches."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from dpo_exp.data.collate import pad_sequences
from dpo_exp.experiment.evaluate import evaluate_policy, sample_once
from dpo_exp.experiment.generation import decode, encode_prompts, generate_completions
from dpo_exp.experiment.sample import sample_and_label, write_split
from dpo_exp.experiment.stages import draw_samples, load_model_folder, sample_settings
from dpo_exp.experiment.task import Task, evaluation_reward
from dpo_exp.models.reward import ClassifierReward, FunctionReward, load_reward
from dpo_exp.tasks import arithmetic
from tests.conftest import tiny_llama_config
from tests.e2e.rewards import partial_credit
from tests.helpers import SMALL_EXPERIMENT, compose_config

# The verifier the arithmetic task names, called as the pipeline called it before rewards were
# scored in batches: once per completion, (prompt, completion, answer) -> float.
VERIFIER = "dpo_exp.tasks.arithmetic:reward"


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


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def old_pairs(item: dict) -> list[tuple[str, str]]:
    """Every higher x lower pair of an item's distinct samples, as pairs were made before the
    reward was a `Reward` (ties never pair; no margin)."""
    distinct: dict[tuple[str, bool], float] = {}
    for text, score, cut in zip(item["completions"], item["rewards"], item["cut"], strict=True):
        distinct.setdefault((text, cut), score)
    return [(high[0], low[0]) for high, hs in distinct.items() for low, ls in distinct.items() if hs > ls]


def test_the_arithmetic_tasks_labels_and_pairs_are_the_verifiers_per_completion(policy_dirs, tmp_path):
    """Machine-independent: whatever this CPU samples, every label is the verifier's own value for
    that completion, and the pairs, KTO and RFT sets are those the per-completion path built."""
    cfg = compose_config(SMALL, fast=False)
    task = Task.from_config(cfg.task)
    assert isinstance(task.reward, FunctionReward) and task.reward.name == cfg.task.reward
    assert "reward_digest" not in task.settings  # a function's stage keys are what they were
    draw_samples(sample_settings(cfg, task, "pinned", 0), task, policy_dirs["policy"], tmp_path)
    for suffix in ("", "_val"):
        items = read_jsonl(tmp_path / f"samples{suffix}.jsonl")
        assert items and all(len(item["completions"]) == 4 for item in items)
        for item in items:
            expected = [partial_credit(item["prompt"], text, item["answer"]) for text in item["completions"]]
            assert item["rewards"] == expected
        pairs = [
            (row["prompt"], row["chosen"], row["rejected"])
            for row in read_jsonl(tmp_path / f"pairs{suffix}.jsonl")
        ]
        assert pairs == [(item["prompt"], *pair) for item in items for pair in old_pairs(item)]
        unpaired = read_jsonl(tmp_path / f"unpaired{suffix}.jsonl")
        labels = [score >= cfg.task.pass_threshold for item in items for score in item["rewards"]]
        assert [row["label"] for row in unpaired] == labels
    stats = json.loads((tmp_path / "stats.json").read_text())["train"]
    items = read_jsonl(tmp_path / "samples.jsonl")
    assert stats["pairs"] == sum(len(old_pairs(item)) for item in items) > 0
    assert stats["mean_reward"] == pytest.approx(sum(sum(i["rewards"]) for i in items) / stats["samples"])


def test_the_arithmetic_tasks_evaluation_figures_are_the_verifiers_per_completion(policy_dirs):
    """Machine-independent: the evaluation's figures are the means of the verifier's values on the
    same draws, called once per completion, for the task's reward and for a held-out one."""
    cfg = compose_config([*SMALL, f"evaluate.reward={VERIFIER}"], fast=False)
    task = Task.from_config(cfg.task)
    held_out = evaluation_reward(cfg, task)
    assert held_out.name == VERIFIER and held_out is not task.reward
    tokenizer, policy = load_model_folder(policy_dirs["policy"])
    _, reference = load_model_folder(policy_dirs["reference"])
    options = {"max_new_tokens": 6, "batch_size": 32, "seed": 1234}
    problems = task.problems["eval"]
    prompt_ids = encode_prompts(tokenizer, [problem.prompt for problem in problems])
    sampled = sample_once(policy, tokenizer, prompt_ids, **options)
    greedy = [
        rows[0]
        for rows in generate_completions(
            policy, tokenizer, prompt_ids, greedy=True, max_new_tokens=6, batch_size=32
        )
    ]
    for reward, function in ((task.reward, partial_credit), (held_out, arithmetic.reward)):
        metrics = evaluate_policy(policy, reference, tokenizer, problems, reward, **options)
        per_prompt = [
            function(p.prompt, decode(tokenizer, ids), p.answer)
            for p, ids in zip(problems, sampled, strict=True)
        ]
        greedy_rewards = [
            function(p.prompt, decode(tokenizer, ids), p.answer)
            for p, ids in zip(problems, greedy, strict=True)
        ]
        assert metrics["sampled_rewards"] == pytest.approx(per_prompt)
        assert metrics["true_reward"] == pytest.approx(sum(per_prompt) / len(problems))
        assert metrics["true_reward_greedy"] == pytest.approx(sum(greedy_rewards) / len(problems))


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
