"""Built-in tasks with a programmatic reward, generated from a seed (no download)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# A task's verifier: (prompt, completion, reference answer) -> reward.
Reward = Callable[[str, str, str], float]


@dataclass(frozen=True)
class Problem:
    """A prompt and its reference answer: the SFT demonstration, and what a reward may check against
    (None for a prompt set without demonstrations)."""

    prompt: str
    answer: str | None


def load_function(path: str) -> Callable[..., Any]:
    """The function named by "package.module:function" (a user's reward, a task's problems)."""
    module_name, _, name = path.partition(":")
    if not module_name or not name:
        raise ValueError(f"expected 'module:function', got {path!r}")
    function = getattr(importlib.import_module(module_name), name, None)
    if not callable(function):
        raise ValueError(f"{path!r}: module {module_name} has no function {name}")
    return function
