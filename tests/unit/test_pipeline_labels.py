"""Pair building, unpaired and RFT sets, and the verifiers, on hand-made samples."""

from __future__ import annotations

import json

import pytest

from dpo_exp.data.records import DataError, PreferencePair, UnpairedExample
from dpo_exp.data.sources import load_records
from dpo_exp.experiment.generation import cut_at_eos, ended
from dpo_exp.experiment.sample import (
    Labelled,
    build_pairs,
    build_rft,
    build_unpaired,
    format_stats,
    label_stats,
    write_split,
)
from dpo_exp.tasks import arithmetic, gsm8k, load_function

MIXED = Labelled("1+1=", "2", ["2", "3", "2", "4"], [1.0, 0.0, 1.0, 0.0], [False] * 4)
TIES = Labelled("2+2=", "4", ["5", "6"], [0.0, 0.0], [False, False])  # all fail: no pair
ALL_PASS = Labelled("3+3=", "6", ["6", "6"], [1.0, 1.0], [False, False])  # all pass: no pair
GRADED = Labelled("p", "a", ["x", "y", "z"], [0.5, 1.0, 0.0], [False] * 3)  # a non-binary reward
# "77" ran out of max_new_tokens twice, once after the same text as an ended sample
CUT = Labelled("4+4=", "8", ["8", "77", "77", "8"], [1.0, 0.0, 0.0, 1.0], [False, True, True, True])


def test_best_vs_worst_takes_the_first_best_and_first_worst_and_drops_ties():
    # Each pair carries its responses' rewards (the reward-aware losses read them).
    assert build_pairs([MIXED, TIES, ALL_PASS]) == [
        PreferencePair("1+1=", "2", "3", chosen_score=1.0, rejected_score=0.0)
    ]
    assert build_pairs([GRADED]) == [PreferencePair("p", "y", "z", chosen_score=1.0, rejected_score=0.0)]


def test_all_mode_pairs_every_distinct_higher_with_every_lower():
    # distinct samples of MIXED: "2" (1.0), "3" (0.0), "4" (0.0) -> 1 x 2 pairs; duplicates count once
    assert build_pairs([MIXED, TIES, ALL_PASS], "all") == [
        PreferencePair("1+1=", "2", "3", chosen_score=1.0, rejected_score=0.0),
        PreferencePair("1+1=", "2", "4", chosen_score=1.0, rejected_score=0.0),
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
    assert build_rft([MIXED, TIES, ALL_PASS], threshold=1.0) == [
        UnpairedExample("1+1=", "2", True),
        UnpairedExample("3+3=", "6", True),
    ]
    assert [(e.prompt, e.completion) for e in build_rft([GRADED], threshold=0.5)] == [("p", "x"), ("p", "y")]


def test_cut_samples_carry_their_mark_and_count_apart_from_the_same_text_ended():
    # distinct (text, cut): ("8", ended) 1.0, ("77", cut) 0.0, ("8", cut) 1.0
    assert build_pairs([CUT], "all") == [
        PreferencePair(
            "4+4=", "8", "77", chosen_cut=False, rejected_cut=True, chosen_score=1.0, rejected_score=0.0
        ),
        PreferencePair(
            "4+4=", "8", "77", chosen_cut=True, rejected_cut=True, chosen_score=1.0, rejected_score=0.0
        ),
    ]
    assert [e.cut for e in build_unpaired([CUT], threshold=1.0)] == [False, True, True, True]
    assert build_rft([CUT], threshold=1.0) == [
        UnpairedExample("4+4=", "8", True),
        UnpairedExample("4+4=", "8", True, cut=True),
    ]
    assert label_stats([CUT, MIXED], threshold=1.0)["cut"] == 3


def test_stats_count_prompts_with_a_usable_pair():
    stats = label_stats([MIXED, TIES, ALL_PASS], threshold=1.0)
    assert stats["prompts"] == 3 and stats["samples"] == 8
    assert stats["prompts_with_pair"] == 1
    assert stats["prompts_all_pass"] == 1 and stats["prompts_all_fail"] == 1
    assert stats["mean_reward"] == pytest.approx(4 / 8)
    assert stats["cut"] == 0


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


def test_a_completion_without_eos_did_not_end():
    assert ended([5, 6, 2], eos_id=2)
    assert not ended([5, 6, 7], eos_id=2)  # ran out of max_new_tokens: cut
    assert not ended([], eos_id=2) and not ended([5], eos_id=None)


def test_write_split_carries_the_cut_marks_into_the_files(tmp_path):
    stats = write_split(tmp_path, "val", [CUT], mode="all", threshold=1.0)
    lines = {
        name: (tmp_path / f"{name}_val.jsonl").read_text().splitlines()
        for name in ("pairs", "unpaired", "rft")
    }
    # the mark is written only where true, and read back by the sources the runs use
    scores = {"score_chosen": 1.0, "score_rejected": 0.0}
    assert [json.loads(line) for line in lines["pairs"]] == [
        {"prompt": "4+4=", "chosen": "8", "rejected": "77", "rejected_cut": True, **scores},
        {
            "prompt": "4+4=",
            "chosen": "8",
            "rejected": "77",
            "chosen_cut": True,
            "rejected_cut": True,
            **scores,
        },
    ]
    assert load_records("pairs", str(tmp_path / "pairs_val.jsonl")) == build_pairs([CUT], "all")
    assert load_records("unpaired", str(tmp_path / "unpaired_val.jsonl")) == build_unpaired([CUT], 1.0)
    assert load_records("unpaired", str(tmp_path / "rft_val.jsonl")) == build_rft([CUT], 1.0)
    assert json.loads((tmp_path / "samples_val.jsonl").read_text())["cut"] == [False, True, True, True]
    assert stats["cut"] == 3
    assert "3 of 4 samples cut at max_new_tokens (no EOS)" in format_stats(stats, "val")


GSM8K_ROWS = [
    {"question": "Tom has 2 apples and buys 3. How many?", "answer": "2+3=<<2+3=5>>5\n#### 5"},
    {"question": "A box holds 1,200 pins; half are used. How many are left?", "answer": "#### 600"},
]


def write_gsm8k_repo(folder, rows) -> str:
    """A folder laid out as openai/gsm8k: its card names the `main` subset's split files."""
    (folder / "main").mkdir(parents=True)
    (folder / "main" / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    card = "---\nconfigs:\n- config_name: main\n  data_files:\n  - split: train\n    path: main/train.jsonl\n"
    card += "---\n"
    (folder / "README.md").write_text(card)
    return str(folder)


def test_gsm8k_problems_from_a_dataset_folder_and_from_a_file_are_the_same(tmp_path):
    repo = write_gsm8k_repo(tmp_path / "gsm8k", GSM8K_ROWS)
    from_repo = gsm8k.problems(2, dataset=repo)
    from_file = gsm8k.problems(2, path=str(tmp_path / "gsm8k" / "main" / "train.jsonl"))
    assert from_repo == from_file
    assert from_repo[0].prompt == "Question: Tom has 2 apples and buys 3. How many?\nAnswer:"
    assert from_repo[1].answer == " #### 600"
    assert gsm8k.problems(1, dataset=repo, offset=1) == from_repo[1:]


def test_gsm8k_rows_without_a_final_answer_name_the_row_and_field(tmp_path):
    repo = write_gsm8k_repo(tmp_path / "gsm8k", [*GSM8K_ROWS, {"question": "q?", "answer": "no marker"}])
    with pytest.raises(
        DataError, match=r"split train\), row 2, field 'answer': the answer has no final '####"
    ):
        gsm8k.problems(3, dataset=repo)
    with pytest.raises(DataError, match=r"has 3 rows from row 0, asked for 5"):
        gsm8k.problems(5, dataset=repo)


def test_gsm8k_offline_names_the_task_options_for_a_local_copy():
    with pytest.raises(
        DataError, match=r"openai/gsm8k@cc7b047 \(subset main, split train\).*task\.options\.path="
    ):
        gsm8k.problems(2, dataset="openai/gsm8k", revision="cc7b047b6e5bb11b4f1af84efc572db110a51b3c")


def test_a_minimum_margin_keeps_only_pairs_whose_rewards_differ_enough():
    from dpo_exp.experiment.sample import Labelled, build_pairs

    item = Labelled("p", "a", ["w", "x", "y", "z"], [0.9, 0.5, 0.45, 0.1], [False] * 4)
    every = build_pairs([item], "all")
    assert len(every) == 6  # 4 samples with distinct rewards: every ordered pair
    wide = build_pairs([item], "all", min_margin=0.4)
    assert {(pair.chosen, pair.rejected) for pair in wide} == {("w", "x"), ("w", "y"), ("w", "z"), ("x", "z")}
    assert [(p.chosen, p.rejected) for p in build_pairs([item], "best_vs_worst", min_margin=0.8)] == [
        ("w", "z")
    ]
    assert build_pairs([item], "best_vs_worst", min_margin=0.81) == []


def test_prompts_with_a_pair_count_only_those_a_margin_left_a_pair(tmp_path):
    from dpo_exp.experiment.sample import Labelled, write_split

    close = Labelled("close", "a", ["x", "y"], [0.5, 0.45], [False, False])
    apart = Labelled("apart", "a", ["x", "y"], [0.9, 0.1], [False, False])
    stats = write_split(tmp_path, "train", [close, apart], mode="all", threshold=0.5, min_margin=0.2)
    assert stats["pairs"] == 1 and stats["prompts_with_pair"] == 1
    stats = write_split(tmp_path, "train", [close, apart], mode="all", threshold=0.5)
    assert stats["pairs"] == 2 and stats["prompts_with_pair"] == 2


def test_a_reward_that_scores_every_sample_the_same_stops_before_pairing():
    from dpo_exp.errors import UserError
    from dpo_exp.experiment.sample import Labelled, check_scores_vary

    same = [Labelled(f"p{i}", "a", ["x", "y"], [0.5, 0.5], [False, False]) for i in range(3)]
    with pytest.raises(
        UserError, match=r"reward my:reward: gave all 6 samples of the train split the same score 0\.5"
    ):
        check_scores_vary(same, "my:reward", "train")
    varied = [*same, Labelled("p3", "a", ["x", "y"], [0.5, 0.6], [False, False])]
    check_scores_vary(varied, "my:reward", "train")  # one prompt that differs is enough
