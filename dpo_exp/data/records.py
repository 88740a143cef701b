"""Record types shared by every data source; `DataError` (from `dpo_exp.errors`) for bad input."""

from __future__ import annotations

from dataclasses import dataclass

from dpo_exp.errors import DataError  # noqa: F401  (re-exported: raised by every source)

# A text field is plain text, or a list of chat messages ({"role": ..., "content": ...})
# that the tokenizer's chat template renders.
Text = str | list[dict[str, str]]


@dataclass(frozen=True)
class PreferencePair:
    """One prompt with a preferred (chosen) and a dispreferred (rejected) completion.

    `chosen_cut`, `rejected_cut`: the response was cut where a generator stopped (its
    max_new_tokens) before it ended, so tokenisation gives it no EOS.
    `chosen_score`, `rejected_score`: each response's reward where the data carry one (a rating,
    a verifier's score), for the reward-aware losses; `weight`: the pair's weight in the loss's
    mean, where the data carry one.
    """

    prompt: Text
    chosen: Text
    rejected: Text
    chosen_cut: bool = False
    rejected_cut: bool = False
    chosen_score: float | None = None
    rejected_score: float | None = None
    weight: float | None = None


@dataclass(frozen=True)
class UnpairedExample:
    """One prompt and completion labelled desirable or not (KTO's data); `cut` as for a pair's
    responses."""

    prompt: Text
    completion: Text
    desirable: bool
    cut: bool = False


Record = PreferencePair | UnpairedExample
