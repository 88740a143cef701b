"""Zero-padded multi-digit addition with the answer written reversed, and its verifier.

A prompt reads "123+045=" and its correct completion is the sum, zero-padded to digits + 1
characters and reversed ("168" -> "0168" -> "8610"): reversed digits let a small left-to-right
model produce the answer carry by carry, as in the length-generalisation literature.
"""

from __future__ import annotations

import random

from dpo_exp.tasks import Problem


def make_problems(count: int, *, digits: int, seed: int) -> list[tuple[int, int]]:
    """`count` distinct (a, b) operand pairs, each below 10**digits, drawn from `seed`."""
    limit = 10**digits
    if count > limit * limit:
        raise ValueError(f"only {limit * limit} distinct {digits}-digit problems exist, asked for {count}")
    rng = random.Random(seed)
    problems: dict[tuple[int, int], None] = {}
    while len(problems) < count:
        problems[(rng.randrange(limit), rng.randrange(limit))] = None
    return list(problems)


def format_prompt(a: int, b: int, *, digits: int) -> str:
    return f"{a:0{digits}d}+{b:0{digits}d}="


def format_answer(value: int, *, digits: int) -> str:
    return f"{value:0{digits + 1}d}"[::-1]


def parse_prompt(prompt: str) -> tuple[int, int, int]:
    """(a, b, digits) from a prompt written by `format_prompt`."""
    left, right = prompt.rstrip("=").split("+")
    return int(left), int(right), len(left)


def reward(prompt: str, completion: str, answer: str | None = None) -> float:
    """1.0 when the completion is exactly the reversed, zero-padded sum; else 0.0.

    `answer` (the reference answer the pipeline passes to every reward) is not needed: the
    prompt alone determines the sum.
    """
    a, b, digits = parse_prompt(prompt)
    return float(completion.strip() == format_answer(a + b, digits=digits))


def problems(count: int, *, digits: int = 3, seed: int = 0) -> list[Problem]:
    """`count` addition problems with their correct answers: the pipeline's prompts and demonstrations."""
    return [
        Problem(format_prompt(a, b, digits=digits), format_answer(a + b, digits=digits))
        for a, b in make_problems(count, digits=digits, seed=seed)
    ]


def corrupt_answer(answer: str, rng: random.Random) -> str:
    """The answer with one digit replaced by a different digit: a near miss."""
    position = rng.randrange(len(answer))
    wrong_digit = rng.choice([d for d in "0123456789" if d != answer[position]])
    return answer[:position] + wrong_digit + answer[position + 1 :]


def preference_pairs(count: int, *, digits: int = 3, seed: int = 0) -> list[tuple[str, str, str]]:
    """(prompt, correct sum, near-miss sum) for generated addition prompts."""
    rng = random.Random(seed + 1)  # a stream apart from the one that drew the problems
    pairs = []
    for a, b in make_problems(count, digits=digits, seed=seed):
        answer = format_answer(a + b, digits=digits)
        pairs.append((format_prompt(a, b, digits=digits), answer, corrupt_answer(answer, rng)))
    return pairs
