"""A task made of a prompt set: read from a file or a dataset folder, prompts and demonstrations by
field, or review prefixes; bad input refused in one line naming the file, row and field."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from dpo_exp.errors import ConfigError, DataError
from dpo_exp.tasks import prompts

ROWS = [
    {"question": f"q{i}", "reply": f" a{i}", "text": f"word{i} two three four five six"} for i in range(6)
]


def jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_prompts_and_demonstrations_by_field_in_a_seeded_order(tmp_path):
    file = jsonl(tmp_path / "set.jsonl", ROWS)
    ordered = prompts.problems(6, path=str(file), prompt_field="question", shuffle_seed=None)
    assert [(p.prompt, p.answer) for p in ordered] == [(f"q{i}", None) for i in range(6)]
    shuffled = prompts.problems(4, path=str(file), prompt_field="question", demonstration_field="reply")
    assert [p.answer for p in shuffled] == [" a" + p.prompt[1:] for p in shuffled]
    assert shuffled == prompts.problems(
        4, path=str(file), prompt_field="question", demonstration_field="reply"
    )
    assert [p.prompt for p in shuffled] != [f"q{i}" for i in range(4)]  # seed 0 reorders these rows


def test_csv_and_a_folder_laid_out_as_a_dataset_read_the_same(tmp_path):
    with open(tmp_path / "set.csv", "w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(ROWS[0]))
        writer.writeheader()
        writer.writerows(ROWS)
    folder = tmp_path / "repo"
    folder.mkdir()
    jsonl(folder / "train.jsonl", ROWS)
    from_csv = prompts.problems(5, path=str(tmp_path / "set.csv"), prompt_field="question")
    from_folder = prompts.problems(5, dataset=str(folder), prompt_field="question")
    assert from_csv == from_folder and len(from_csv) == 5


def test_prefixes_of_a_drawn_length_with_the_rest_as_demonstration(tmp_path):
    file = jsonl(tmp_path / "set.jsonl", ROWS)
    problems = prompts.problems(6, path=str(file), prompt_field="text", prefix_tokens=[2, 4])
    for problem in problems:
        assert 2 <= len(problem.prompt.split(" ")) <= 4
        assert (problem.prompt + problem.answer).endswith("two three four five six")
    assert len({len(p.prompt.split(" ")) for p in problems}) > 1  # lengths drawn, not fixed
    assert problems == prompts.problems(6, path=str(file), prompt_field="text", prefix_tokens=[2, 4])


def test_prefixes_by_a_tokenizer_split_the_text_at_a_token(tmp_path, family_dirs):
    file = jsonl(tmp_path / "set.jsonl", ROWS)
    problems = prompts.problems(
        6, path=str(file), prompt_field="text", prefix_tokens=[3, 3], tokenizer=str(family_dirs["gpt2"])
    )
    for problem in problems:
        assert len(problem.prompt) == 3  # the character tokenizer: a token is a character
    assert sorted(p.prompt + p.answer for p in problems) == sorted(row["text"] for row in ROWS)


def test_a_prompt_set_with_no_rows_is_refused_naming_the_file(tmp_path):
    file = tmp_path / "empty.jsonl"
    file.write_text("", encoding="utf-8")
    with pytest.raises(DataError, match=r"empty\.jsonl: the data has no rows"):
        prompts.problems(1, path=str(file))


def test_a_missing_field_is_refused_naming_the_line_and_field(tmp_path):
    rows = [*ROWS[:2], {"question": "q2"}, *ROWS[3:]]
    file = jsonl(tmp_path / "set.jsonl", rows)
    with pytest.raises(DataError, match=r"set\.jsonl, line 3, field 'reply': expected a string, got null"):
        prompts.problems(6, path=str(file), prompt_field="question", demonstration_field="reply")
    with pytest.raises(DataError, match=r"line 1, field 'prompt': .*fields: question, reply, text"):
        prompts.problems(6, path=str(file), shuffle_seed=None)


def test_an_empty_prompt_and_too_few_rows_are_refused(tmp_path):
    file = jsonl(tmp_path / "set.jsonl", [{"prompt": "  "}])
    with pytest.raises(DataError, match=r"line 1, field 'prompt': is empty"):
        prompts.problems(1, path=str(file))
    with pytest.raises(DataError, match=r"set\.jsonl: has 1 rows, and the task's splits need 2 prompts"):
        prompts.problems(2, path=str(file))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "task.options: a prompt set is read from task.options.path"),
        ({"path": "x", "dataset": "y"}, "exactly one of them"),
        ({"path": "x", "prefix_tokens": [2, 8], "demonstration_field": "d"}, "demonstration_field: with"),
        ({"path": "x", "prefix_tokens": [8, 2]}, r"prefix_tokens must be \[low, high\]"),
    ],
)
def test_options_that_cannot_work_are_refused_naming_them(tmp_path, options, message):
    if options.get("path") == "x":
        options = {**options, "path": str(jsonl(tmp_path / "set.jsonl", ROWS))}
    with pytest.raises(ConfigError, match=message):
        prompts.problems(1, **options)
