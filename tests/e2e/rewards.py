"""Rewards for the end-to-end runs of the built-in experiment, importable without side effects
(a task's reward is imported by the run itself: this module must not import the test fixtures)."""

from __future__ import annotations

from dpo_exp.tasks.arithmetic import parse_prompt


def partial_credit(prompt: str, completion: str, answer: str) -> float:
    """The fraction of answer characters right: a graded reward, so an untrained model gives pairs."""
    parse_prompt(prompt)  # a user reward may read the prompt; this one only checks it parses
    return sum(a == b for a, b in zip(completion, answer, strict=False)) / len(answer)


def score(prompt: str, completion: str, answer: str | None) -> float:
    """A reward of a fixed dataset (answer None): the fraction of the completion that is digits."""
    return sum(character.isdigit() for character in completion) / max(len(completion), 1)
