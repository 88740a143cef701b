"""Pair building, unpaired and RFT sets, and the verifiers, on hand-made samples."""

from __future__ import annotations

import pytest

from dpo_exp.data.records import PreferencePair, UnpairedExample
from dpo_exp.experiment.generation import cut_at_eos
from dpo_exp.experiment.sample import Labelled, build_pairs, build_rft, build_unpaired, label_stats
from dpo_exp.tasks import arithmetic, gsm8k, load_function

MIXED = Labelled("1+1=", "2", ["2", "3", "2", "4"], [1.0, 0.0, 1.0, 0.0])
TIES = Labelled("2+2=", "4", ["5", "6"], [0.0, 0.0])  # all fail: no pair
ALL_PASS = Labelled("3+3=", "6", ["6", "6"], [1.0, 1.0])  # all pass: no pair
GRADED = Labelled("p", "a", ["x", "y", "z"], [0.5, 1.0, 0.0])  # a non-binary reward


def test_best_vs_worst_takes_the_first_best_and_first_worst_and_drops_ties():
    assert build_pairs([MIXED, TIES, ALL_PASS]) == [PreferencePair("1+1=", "2", "3")]
    assert build_pairs([GRADED]) == [PreferencePair("p", "y", "z")]


def test_all_mode_pairs_every_distinct_higher_with_every_lower():
    # distinct samples of MIXED: "2" (1.0), "3" (0.0), "4" (0.0) -> 1 x 2 pairs; duplicates count once
    assert build_pairs([MIXED, TIES, ALL_PASS], "all") == [
        PreferencePair("1+1=", "2", "3"),
        PreferencePair("1+1=", "2", "4"),
    ]
    # graded: y > x, y > z, x > z
    assert sorted((p.chosen, p.rejected) for p in build_pairs([GRADED], "all")) == [
        ("x", "z"),
        ("y", "x"),
        ("y", "z"),
    ]


def test_unknown_pair_mode_fails():
    with pytest.raises(ValueError, match="unknown pair mode 'some'; valid modes: best_vs_worst, all"):
        build_pairs([MIXED], "some")


def test_unpaired_set_holds_every_sample_as_drawn():
    # duplicates stay: MIXED drew "2" twice, ALL_PASS "6" twice
    assert build_unpaired([MIXED, ALL_PASS], threshold=1.0) == [
        UnpairedExample("1+1=", "2", True),
        UnpairedExample("1+1=", "3", False),
        UnpairedExample("1+1=", "2", True),
        UnpairedExample("1+1=", "4", False),
        UnpairedExample("3+3=", "6", True),
        UnpairedExample("3+3=", "6", True),
    ]
    assert [e.desirable for e in build_unpaired([GRADED], threshold=0.5)] == [True, True, False]


def test_rft_set_holds_each_distinct_passing_sample_once():
    assert build_rft([MIXED, TIES, ALL_PASS], threshold=1.0) == [("1+1=", "2"), ("3+3=", "6")]
    assert build_rft([GRADED], threshold=0.5) == [("p", "x"), ("p", "y")]


def test_stats_count_prompts_with_a_usable_pair():
    stats = label_stats([MIXED, TIES, ALL_PASS], threshold=1.0)
    assert stats["prompts"] == 3 and stats["samples"] == 8
    assert stats["prompts_with_pair"] == 1
    assert stats["prompts_all_pass"] == 1 and stats["prompts_all_fail"] == 1
    assert stats["mean_reward"] == pytest.approx(4 / 8)


def test_arithmetic_verifier_takes_the_pipeline_signature():
    assert arithmetic.reward("123+045=", "8610", "8610") == 1.0
    assert arithmetic.reward("123+045=", "8611", "8610") == 0.0
    problem = arithmetic.problems(1, digits=3, seed=0)[0]
    assert arithmetic.reward(problem.prompt, problem.answer) == 1.0


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        (" 48 + 24 = 72\n#### 72", 1.0),
        ("#### 72.0", 1.0),
        ("so the answer is\n#### 1,600 and more text", 0.0),  # 1600 != 72
        ("72", 0.0),  # no final-answer marker
        ("#### ", 0.0),
    ],
)
def test_gsm8k_final_answer_checker(completion, expected):
    assert gsm8k.reward("Question: ...\nAnswer:", completion, " worked...\n#### 72") == expected


def test_gsm8k_answer_normalisation():
    assert gsm8k.final_answer("x\n#### 1,600") == "1600"
    assert gsm8k.final_answer("#### -3") == "-3"
    assert gsm8k.final_answer("no marker") is None


def test_reward_is_found_by_import_path():
    assert load_function("dpo_exp.tasks.gsm8k:reward") is gsm8k.reward
    with pytest.raises(ValueError, match="expected 'module:function'"):
        load_function("dpo_exp.tasks.gsm8k.reward")
    with pytest.raises(ValueError, match="has no function nope"):
        load_function("dpo_exp.tasks.gsm8k:nope")


def test_generated_ids_are_cut_after_the_first_eos():
    assert cut_at_eos([5, 6, 2, 0, 0], eos_id=2) == [5, 6, 2]
    assert cut_at_eos([5, 6, 7], eos_id=2) == [5, 6, 7]  # ran out of max_new_tokens
