"""Built-in tasks with a programmatic reward, generated from a seed (no download)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """A prompt and its reference answer: the SFT demonstration, and what a reward may check against."""

    prompt: str
    answer: str
