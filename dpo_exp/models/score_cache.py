"""Reward scores kept on disk by (reward digest, prompt, completion, answer), so a completion is scored once.

Evaluations score the same texts again and again: the reference's samples, the policy's at step 0
(the same draws from the same weights), a rerun of the same config. Each call that scores new
completions writes one file, `<folder>/<reward digest>/<digest of its keys>.json`, through a
temporary file and a rename, holding its scores and a checksum of them. A file that cannot be read,
whose checksum does not match, or that holds a non-finite score is skipped with a warning (its
completions are scored again): a damaged cache costs time, never a wrong number.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dpo_exp.console import warn
from dpo_exp.models.reward import Reward
from dpo_exp.storage import write_json_atomically


def score_key(prompt: str, completion: str, answer: str | None) -> str:
    text = json.dumps([prompt, completion, answer], ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def checksum(scores: dict[str, float]) -> str:
    return hashlib.sha256(json.dumps(scores, sort_keys=True).encode()).hexdigest()


class CachedReward:
    """`reward`'s scores, read from `folder` where known and written there where new."""

    def __init__(self, reward: Reward, folder: Path) -> None:
        self.reward = reward
        self.name = reward.name
        self.digest = reward.digest
        self.folder = Path(folder) / reward.digest
        self.known: dict[str, float] | None = None  # read from disk at the first call
        self.hits = 0
        self.misses = 0

    def to(self, device: Any) -> CachedReward:
        self.reward.to(device)
        return self

    def score(
        self, prompts: Sequence[str], completions: Sequence[str], answers: Sequence[str | None] | None = None
    ) -> list[float]:
        answers = list(answers) if answers is not None else [None] * len(prompts)
        keys = [score_key(*row) for row in zip(prompts, completions, answers, strict=True)]
        known = self.read() if self.known is None else self.known
        new = {key: index for index, key in enumerate(keys) if key not in known}  # each text once
        self.misses += len(new)
        self.hits += len(keys) - len(new)
        if new:
            rows = list(new.values())
            scores = self.reward.score(
                [prompts[i] for i in rows], [completions[i] for i in rows], [answers[i] for i in rows]
            )
            written = dict(zip(new, scores, strict=True))
            known.update(written)
            name = hashlib.sha256("".join(sorted(written)).encode()).hexdigest()[:16]
            write_json_atomically(
                {"scores": written, "checksum": checksum(written)}, self.folder / f"{name}.json"
            )
        return [known[key] for key in keys]

    def read(self) -> dict[str, float]:
        """Every whole, checked file's scores; a damaged one is skipped, with a warning naming it."""
        self.known = {}
        for path in sorted(self.folder.glob("*.json")) if self.folder.is_dir() else []:
            scores = read_scores(path)
            if scores is None:
                warn(f"reward score cache: {path} is damaged; its completions are scored again")
                continue
            self.known.update(scores)
        return self.known


def read_scores(path: Path) -> dict[str, float] | None:
    """The scores of one cache file, or None when it is unreadable, altered or holds a non-number."""
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
        scores = content["scores"]
        valid = isinstance(scores, dict) and content["checksum"] == checksum(scores)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not valid or not all(isinstance(v, int | float) and math.isfinite(v) for v in scores.values()):
        return None
    return {str(key): float(value) for key, value in scores.items()}
