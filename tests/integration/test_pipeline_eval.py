"""Sampling, labelling and the KL estimate on tiny models (any HF causal LM, any reward by path)."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from dpo_exp.data.collate import pad_sequences
from dpo_exp.experiment.evaluate import evaluate_policy, logprob_drift
from dpo_exp.experiment.generation import encode_prompts, generate_completions
from dpo_exp.experiment.sample import sample_and_label, split_files, write_split
from dpo_exp.models.reward import load_reward
from dpo_exp.tasks import arithmetic, gsm8k
from tests.conftest import tiny_llama_config

VERIFIER = load_reward("dpo_exp.tasks.arithmetic:reward")


@pytest.fixture
def tiny_policy(char_tokenizer):
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(tiny_llama_config(char_tokenizer, max_position_embeddings=1024))


def test_completions_end_at_eos_and_greedy_is_deterministic(tiny_policy, char_tokenizer):
    prompt_ids = encode_prompts(char_tokenizer, ["12+3=", "123+456="])  # unequal lengths: left padding
    sampled = generate_completions(tiny_policy, char_tokenizer, prompt_ids, num_samples=3, max_new_tokens=5)
    assert [len(rows) for rows in sampled] == [3, 3]
    eos = char_tokenizer.eos_token_id
    for ids in (ids for rows in sampled for ids in rows):
        assert 1 <= len(ids) <= 5 and eos not in ids[:-1]
    greedy = [generate_completions(tiny_policy, char_tokenizer, prompt_ids, greedy=True, max_new_tokens=5)]
    greedy.append(
        generate_completions(tiny_policy, char_tokenizer, prompt_ids, greedy=True, max_new_tokens=5)
    )
    assert greedy[0] == greedy[1]
    # Left padding must not change what a prompt generates: alone, the short prompt gives the same.
    alone = generate_completions(tiny_policy, char_tokenizer, prompt_ids[:1], greedy=True, max_new_tokens=5)
    assert alone[0] == greedy[0][0]


def test_a_progress_bar_moves_with_decoding_and_leaves_the_samples_unchanged(tiny_policy, char_tokenizer):
    prompt_ids = encode_prompts(char_tokenizer, ["12+3=", "123+456=", "1+1=", "9+9="])
    options = {"num_samples": 2, "max_new_tokens": 5, "batch_size": 3}  # batches of 3 and 1 prompts
    torch.manual_seed(1)
    plain = generate_completions(tiny_policy, char_tokenizer, prompt_ids, **options)
    steps = []

    class Bar:  # what generate_completions uses of a tqdm bar
        n = 0.0

        def update(self, amount):
            self.n += amount
            steps.append(self.n)

    torch.manual_seed(1)
    bar = Bar()
    assert generate_completions(tiny_policy, char_tokenizer, prompt_ids, bar=bar, **options) == plain
    assert bar.n == pytest.approx(4)  # every prompt counted once, however early its batch stopped
    assert len(steps) > 2 and steps[0] == pytest.approx(3 / 5)  # 3 prompts moved 1/5 per decoding step


def test_samples_that_reach_max_new_tokens_without_eos_are_marked_cut(tiny_policy, char_tokenizer, tmp_path):
    problems = arithmetic.problems(3, digits=2, seed=0)
    options = {"num_samples": 2, "temperature": 1.0, "top_p": 1.0, "max_new_tokens": 3, "batch_size": 8}
    # EOS made impossible: every sample runs to max_new_tokens and is cut.
    tiny_policy.generation_config.suppress_tokens = [char_tokenizer.eos_token_id]
    cut = sample_and_label(tiny_policy, char_tokenizer, problems, VERIFIER, **options)
    assert [item.cut for item in cut] == [[True, True]] * 3
    # EOS forced at the last step at the latest: every sample ends, none is cut.
    tiny_policy.generation_config.suppress_tokens = None
    tiny_policy.generation_config.forced_eos_token_id = char_tokenizer.eos_token_id
    ended = sample_and_label(tiny_policy, char_tokenizer, problems, VERIFIER, **options)
    assert [item.cut for item in ended] == [[False, False]] * 3

    stats = write_split(tmp_path, "train", cut + ended, mode="all", threshold=1.0)
    assert stats["cut"] == 6 and stats["samples"] == 12
    rows = [json.loads(line) for line in (tmp_path / "unpaired.jsonl").read_text().splitlines()]
    assert [row.get("cut", False) for row in rows] == [True] * 6 + [False] * 6


def _train_a_little(policy, tokenizer, problems, steps=30):
    """A few supervised steps toward the correct answers: the policy leaves its reference."""
    optimizer = torch.optim.AdamW(policy.parameters(), lr=3e-3)
    prompts = encode_prompts(tokenizer, [p.prompt for p in problems])
    answers = [
        tokenizer.encode(p.answer, add_special_tokens=False) + [tokenizer.eos_token_id] for p in problems
    ]
    batch = pad_sequences(prompts, answers, tokenizer.pad_token_id)
    policy.train()
    for _ in range(steps):
        loss = policy(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def test_kl_is_zero_for_the_reference_and_positive_after_training(tiny_policy, char_tokenizer):
    problems = arithmetic.problems(64, digits=3, seed=0)
    reference = copy.deepcopy(tiny_policy).eval()
    options = {"max_new_tokens": 6, "batch_size": 64, "seed": 0}
    before = evaluate_policy(tiny_policy, reference, char_tokenizer, problems, VERIFIER, **options)
    assert before["kl"] == pytest.approx(0.0, abs=1e-5)
    assert 0.0 <= before["true_reward"] <= 1.0 and 0.0 <= before["true_reward_greedy"] <= 1.0

    _train_a_little(tiny_policy, char_tokenizer, problems)
    after = evaluate_policy(tiny_policy, reference, char_tokenizer, problems, VERIFIER, **options)
    assert after["kl"] > 0.5


def test_logprob_drift_is_zero_against_itself(tiny_policy, char_tokenizer):
    from dpo_exp.data.tokenize import TokenizedPair

    pairs = [TokenizedPair([5, 6, 7], [8, 9, 2], [10, 2])]
    drift = logprob_drift(tiny_policy, copy.deepcopy(tiny_policy), pairs, char_tokenizer.pad_token_id)
    assert drift == {
        "logratio/chosen": pytest.approx(0.0, abs=1e-6),
        "logratio/rejected": pytest.approx(0.0, abs=1e-6),
    }


@pytest.mark.real_data
def test_sample_and_label_on_gsm8k_with_a_saved_model_and_a_reward_by_path(
    tiny_model_dir, tmp_path, gsm8k_repo
):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    problems = gsm8k.problems(3, dataset=str(gsm8k_repo), split="test")
    reward = load_reward("dpo_exp.tasks.gsm8k:reward")
    labelled = sample_and_label(
        model,
        tokenizer,
        problems,
        reward,
        num_samples=2,
        temperature=1.0,
        top_p=0.9,
        max_new_tokens=8,
        batch_size=2,
    )
    assert [item.prompt for item in labelled] == [p.prompt for p in problems]
    assert labelled[0].prompt.startswith("Question: ") and labelled[0].prompt.endswith("\nAnswer:")
    assert all(len(item.completions) == 2 and set(item.rewards) <= {0.0, 1.0} for item in labelled)

    stats = write_split(tmp_path, "train", labelled, mode="best_vs_worst", threshold=1.0)
    assert stats["prompts"] == 3 and stats["samples"] == 6
    for name in split_files("train").values():
        assert (tmp_path / name).exists()
    rows = [json.loads(line) for line in (tmp_path / "unpaired.jsonl").read_text().splitlines()]
    # an untrained model rarely ends within 8 tokens: such samples are marked cut
    assert rows and all(set(row) - {"cut"} == {"prompt", "completion", "label"} for row in rows)


@pytest.mark.parametrize("data", ["arithmetic", "gsm8k"])
def test_every_task_validates(data):
    from dpo_exp.config import is_experiment, validate_config
    from tests.helpers import compose_config

    cfg = compose_config([f"data={data}"], fast=False)
    validate_config(cfg)
    assert is_experiment(cfg)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "sample.pair_mode=random",
            "sample.pair_mode: Invalid value 'random', expected one of [best_vs_worst, all]",
        ),
        ("evaluate.split=sft", "evaluate.split: Invalid value 'sft', expected one of [eval, tune]"),
        ("task.splits.eval=0", "task.splits.eval must be a positive integer"),
        ("task.reward=dpo_exp.tasks.arithmetic:nope", "task.reward: 'dpo_exp.tasks.arithmetic:nope'"),
        ("online.rounds=0", "online.rounds must be at least 1, got 0"),
        (
            "online.reference=random",
            "online.reference: Invalid value 'random', expected one of [sft, previous]",
        ),
        ("+sft.momentum=0.9", "sft.momentum: Key 'momentum' not in 'SftSchema'"),
    ],
)
def test_bad_experiment_settings_fail_with_the_key(override, message):
    from dpo_exp.config import ConfigError, validate_config
    from tests.helpers import compose_config

    with pytest.raises(ConfigError) as raised:
        validate_config(compose_config([override], fast=False))
    assert message in str(raised.value)


def test_the_paired_gain_and_its_interval_by_hand():
    from dpo_exp.experiment.evaluate import paired_gain

    # Differences 1, 0, 1, 0: mean 0.5, sd (ddof 1) = sqrt(1/3) = 0.57735, se = 0.288675,
    # 1.96 se = 0.565803.
    gain = paired_gain([1.0, 1.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0])
    assert gain == pytest.approx(
        {"gain/mean": 0.5, "gain/ci95_low": -0.065803, "gain/ci95_high": 1.065803}, abs=1e-6
    )
    # The same rewards unpaired would say nothing of which prompts moved: equal lists give 0 +- 0.
    assert paired_gain([1.0, 0.0], [1.0, 0.0]) == {
        "gain/mean": 0.0,
        "gain/ci95_low": 0.0,
        "gain/ci95_high": 0.0,
    }
