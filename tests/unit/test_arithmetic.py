"""The built-in addition task: formatting, verifier and generated pairs."""

import random

from dpo_exp.tasks.arithmetic import (
    corrupt_answer,
    format_answer,
    format_prompt,
    make_problems,
    preference_pairs,
    reward,
)


def test_answer_is_zero_padded_and_reversed():
    # 123 + 45 = 168 -> "0168" -> reversed "8610"
    assert format_prompt(123, 45, digits=3) == "123+045="
    assert format_answer(168, digits=3) == "8610"
    assert format_answer(999 + 999, digits=3) == "8991"


def test_verifier_accepts_only_the_exact_answer():
    assert reward("123+045=", "8610") == 1.0
    assert reward("123+045=", " 8610 ") == 1.0  # surrounding whitespace is not an error
    assert reward("123+045=", "0168") == 0.0  # not reversed
    assert reward("123+045=", "861") == 0.0
    assert reward("123+045=", "") == 0.0


def test_problems_are_distinct_and_seeded():
    first = make_problems(500, digits=2, seed=3)
    assert len(set(first)) == 500
    assert first == make_problems(500, digits=2, seed=3)
    assert first != make_problems(500, digits=2, seed=4)


def test_corrupted_answer_differs_in_exactly_one_digit():
    rng = random.Random(0)
    for _ in range(100):
        wrong = corrupt_answer("8610", rng)
        assert sum(a != b for a, b in zip(wrong, "8610", strict=True)) == 1


def test_pairs_prefer_the_correct_sum():
    for prompt, chosen, rejected in preference_pairs(50, digits=3, seed=0):
        assert reward(prompt, chosen) == 1.0
        assert reward(prompt, rejected) == 0.0
