"""A task made of a prompt set: prompts (and optionally demonstrations) read from a file, a folder
laid out as a dataset repository, or a hub dataset by id and revision. Its reward is whatever
`task.reward` names (a function or a sequence classifier): a prompt set carries no verifier.

Each row gives one problem: its prompt is the row's `prompt_field`, its answer (the SFT stage's
target) the row's `demonstration_field`, or None where there is none (then the SFT stage trains
nothing: `sft.steps=0` takes the model as it is, and the stage refuses any other count).

With `prefix_tokens: [low, high]` the prompt is instead a prefix of the row's text, of a length
drawn uniformly from [low, high] tokens of `tokenizer` (words split on whitespace when null), and
the answer is the rest of the text: the DPO paper's IMDb task, where the policy continues the
first few tokens of a review and its demonstrations are the reviews themselves.

Rows are taken in an order shuffled from `shuffle_seed` (null: the file's order), so a dataset
sorted by label, as IMDb's splits are, still gives every task split both kinds of row.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from dpo_exp.errors import ConfigError, DataError
from dpo_exp.rows import DatasetSplit, describe, position_of_row, read_rows
from dpo_exp.tasks import Problem

LOCAL_COPY_HINT = (
    "task.options.dataset=<a folder laid out as the hub repository> task.options.revision=null, "
    "or task.options.path=<a JSONL/Parquet/CSV file>"
)


def problems(
    count: int,
    *,
    path: str | None = None,
    dataset: str | None = None,
    revision: str | None = None,
    subset: str | None = None,
    split: str = "train",
    prompt_field: str = "prompt",
    demonstration_field: str | None = None,
    prefix_tokens: list[int] | None = None,
    tokenizer: str | None = None,
    tokenizer_revision: str | None = None,
    shuffle_seed: int | None = 0,
) -> list[Problem]:
    """The first `count` rows of the prompt set (in the order `shuffle_seed` draws) as problems."""
    if (path is None) == (dataset is None):
        raise ConfigError(
            "task.options: a prompt set is read from task.options.path (a file) or task.options.dataset "
            "(a hub id or a folder), exactly one of them"
        )
    if prefix_tokens is not None and demonstration_field is not None:
        raise ConfigError(
            "task.options.demonstration_field: with task.options.prefix_tokens the rest of each text is "
            "its demonstration"
        )
    where, rows, order, at = ordered_rows(
        path, DatasetSplit(dataset or "", split, revision, subset), shuffle_seed
    )
    if len(rows) < count:
        raise DataError(f"has {len(rows)} rows, and the task's splits need {count} prompts", file=where)
    if prefix_tokens is None:
        return [
            Problem(
                text(rows[i], prompt_field, where, at(i)),
                None if demonstration_field is None else text(rows[i], demonstration_field, where, at(i)),
            )
            for i in order[:count]
        ]
    low, high = check_prefix_tokens(prefix_tokens)
    split_text = splitter(tokenizer, tokenizer_revision)
    rng = random.Random(0 if shuffle_seed is None else shuffle_seed)
    return [
        Problem(*split_text(text(rows[i], prompt_field, where, at(i)), rng.randint(low, high)))
        for i in order[:count]
    ]


def ordered_rows(
    path: str | None, split: DatasetSplit, shuffle_seed: int | None
) -> tuple[str, list[dict[str, Any]], list[int], Callable[[int], dict[str, int]]]:
    """(where, the rows, their order, where a row is as an error names it) of `path` or else `split`."""
    location = path if path is not None else split
    where, rows = read_rows(location, None, local_copy_hint=LOCAL_COPY_HINT)
    order = list(range(len(rows)))
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(order)

    def at(index: int) -> dict[str, int]:
        return position_of_row(where, index) if isinstance(location, str) else {"row": index}

    return where, rows, order, at


def text(row: dict[str, Any], field: str, where: str, at: dict[str, int]) -> str:
    """The row's `field`, refused unless it is a string with something in it."""
    value = row.get(field)
    if not isinstance(value, str):
        known = ", ".join(sorted(row)) or "none"
        message = f"expected a string, got {describe(value)} (the row's fields: {known})"
        raise DataError(message, file=where, field=field, **at)
    if not value.strip():
        raise DataError("is empty: a prompt set's rows need text", file=where, field=field, **at)
    return value


def check_prefix_tokens(prefix_tokens: Any) -> tuple[int, int]:
    values = list(prefix_tokens)
    if len(values) != 2 or not all(isinstance(v, int) for v in values) or not 1 <= values[0] <= values[1]:
        raise ConfigError(
            f"task.options.prefix_tokens must be [low, high] with 1 <= low <= high, got {prefix_tokens!r}"
        )
    return values[0], values[1]


def splitter(tokenizer: str | None, revision: str | None) -> Callable[[str, int], tuple[str, str]]:
    """(text, n) -> (its first n tokens, the rest), by `tokenizer` (a path or hub id) or by words."""
    if tokenizer is None:

        def by_words(value: str, n: int) -> tuple[str, str]:
            words = value.split(" ")
            return " ".join(words[:n]), " " + " ".join(words[n:]) if words[n:] else ""

        return by_words
    from transformers import AutoTokenizer  # slow to import; only a tokenized prefix needs it

    try:
        loaded = AutoTokenizer.from_pretrained(tokenizer, revision=revision)
    except (OSError, ValueError) as error:
        raise ConfigError(f"task.options.tokenizer: cannot load {tokenizer} ({error})") from None

    def by_tokens(value: str, n: int) -> tuple[str, str]:
        ids = loaded.encode(value, add_special_tokens=False)
        return loaded.decode(ids[:n]), loaded.decode(ids[n:])

    return by_tokens
