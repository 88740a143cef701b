"""GSM8K word problems read from JSONL, and a final-answer checker usable as a pipeline reward.

A prompt is "Question: <question>\\nAnswer:"; the reference answer is the worked solution, which
ends with "#### <final answer>". A completion earns 1.0 when its text after its last "####" is
the same number as the reference's (thousands separators and a trailing ".0" ignored).
"""

from __future__ import annotations

import json
from pathlib import Path

from dpo_exp.tasks import Problem

MARKER = "####"


def problems(count: int, *, path: str, offset: int = 0) -> list[Problem]:
    """Rows [offset, offset + count) of a GSM8K JSONL file as problems."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()[offset : offset + count]
    if len(lines) < count:
        raise ValueError(f"{path} has {len(lines)} rows from row {offset}, asked for {count}")
    rows = [json.loads(line) for line in lines]
    return [Problem(f"Question: {row['question']}\nAnswer:", " " + row["answer"]) for row in rows]


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
