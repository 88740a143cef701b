"""GSM8K word problems, read by hub id (openai/gsm8k) or from a local file, and a final-answer
checker usable as a pipeline reward.

A prompt is "Question: <question>\\nAnswer:"; the reference answer is the worked solution, which
ends with "#### <final answer>". A completion earns 1.0 when its text after its last "####" is
the same number as the reference's (thousands separators and a trailing ".0" ignored).
"""

from __future__ import annotations

from dpo_exp.errors import DataError
from dpo_exp.rows import DatasetSplit, describe, position_of_row, read_rows
from dpo_exp.tasks import Problem

MARKER = "####"
LOCAL_COPY_HINT = (
    "task.options.dataset=<a folder laid out as the hub repository> task.options.revision=null, "
    "or task.options.path=<a JSONL/Parquet file>"
)


def problems(
    count: int,
    *,
    dataset: str | None = None,
    revision: str | None = None,
    subset: str | None = "main",
    split: str = "train",
    path: str | None = None,
    offset: int = 0,
) -> list[Problem]:
    """Rows [offset, offset + count) of GSM8K as problems: from `path` (a local file) when given,
    else from the dataset split (`dataset` a hub id or a local folder laid out as its repository)."""
    if path is None and dataset is None:
        raise DataError("GSM8K needs task.options.dataset (a hub id or folder) or task.options.path (a file)")
    if path is None:
        location = DatasetSplit(dataset, split, revision=revision, subset=subset)
    else:
        location = path
    where, rows = read_rows(location, None, local_copy_hint=LOCAL_COPY_HINT)
    rows = rows[offset : offset + count]
    if len(rows) < count:
        raise DataError(f"has {len(rows)} rows from row {offset}, asked for {count}", file=where)
    return [_problem(row, where, location, offset + index) for index, row in enumerate(rows)]


def _problem(row: dict, where: str, location: str | DatasetSplit, row_index: int) -> Problem:
    at = position_of_row(where, row_index) if isinstance(location, str) else {"row": row_index}
    for field in ("question", "answer"):
        if not isinstance(row.get(field), str):
            raise DataError(
                f"expected a string, got {describe(row.get(field))}", file=where, field=field, **at
            )
    if final_answer(row["answer"]) is None:
        raise DataError(f"the answer has no final '{MARKER} <answer>'", file=where, field="answer", **at)
    return Problem(f"Question: {row['question']}\nAnswer:", " " + row["answer"])


def final_answer(text: str) -> str | None:
    """The normalised number after the last "####", or None when there is none."""
    if MARKER not in text:
        return None
    value = text.rsplit(MARKER, 1)[1].strip().split("\n")[0].strip().replace(",", "").rstrip(".")
    if value.endswith(".0"):
        value = value[:-2]
    return value or None


def reward(prompt: str, completion: str, answer: str) -> float:
    """1.0 when the completion's final answer equals the reference's; else 0.0."""
    predicted = final_answer(completion)
    return float(predicted is not None and predicted == final_answer(answer))
