"""Records -> token ids: chat rendering, truncation and dropping, as pure functions of a tokenizer.

The prompt and each response are tokenised separately and joined as ids (never as text), so
no token merges across the prompt/response boundary and the response starts at a known index.
Each response ends with EOS, except one marked cut (`chosen_cut`, `rejected_cut`, `cut`: a sample
that reached its generator's max_new_tokens before it ended, so training must not teach an end
it never produced). Truncation, in this order:
1. the prompt is cut to `max_prompt_length` keeping its end (the latest turns; a leading BOS
   is kept in place);
2. if prompt + the longest response is longer than `max_length`, each response is cut to
   `max_length - len(prompt)` keeping its start (so a cut response has no EOS).
A record that cannot give a useful example is dropped and its reason counted (`DROP_REASONS`).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from dpo_exp.data.records import DataError, PreferencePair, Record, Text, UnpairedExample

# Why a record was dropped, as counted by `tokenize_records`.
EMPTY_PROMPT = "empty_prompt"  # no prompt text
EMPTY_RESPONSE = "empty_response"  # a response is empty or whitespace (HH-RLHF has " " and "")
TRUNCATED_AWAY = "response_truncated_away"  # a response has no tokens left after truncation
CHOSEN_EQUALS_REJECTED = "chosen_equals_rejected"  # identical text, or identical ids after cutting
DROP_REASONS = (EMPTY_PROMPT, EMPTY_RESPONSE, TRUNCATED_AWAY, CHOSEN_EQUALS_REJECTED)


@dataclass(frozen=True)
class TokenizedPair:
    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]
    truncated: tuple[str, ...] = ()  # the responses cut at max_length ("chosen", "rejected")
    scores: tuple[float, float] | None = None  # (chosen, rejected) rewards, where the data carry them
    weight: float | None = None  # the pair's weight, where the data carry one
    # As the data wrote it (text or messages): what a reward model reads; not part of its identity.
    prompt: Text | None = dataclasses.field(default=None, compare=False)


@dataclass(frozen=True)
class TokenizedUnpaired:
    prompt_ids: list[int]
    completion_ids: list[int]
    desirable: bool
    truncated: tuple[str, ...] = ()  # ("completion",) when it was cut at max_length
    # As the data wrote it (text or messages): what a reward model reads; not part of its identity.
    prompt: Text | None = dataclasses.field(default=None, compare=False)


Tokenized = TokenizedPair | TokenizedUnpaired


def render(record: Record, tokenizer: Any) -> Record:
    """Message-list fields -> text with the tokenizer's chat template; plain text unchanged.

    The prompt is rendered with `add_generation_prompt=True`; a response is the rendering of
    prompt + response messages minus the rendered prompt, which must be a prefix of it.
    """
    values = [record.prompt, *(getattr(record, name) for name in _response_names(record))]
    kinds = {isinstance(value, list) for value in values}
    if kinds == {False}:
        return record
    if kinds == {True, False}:
        raise DataError("the prompt and the responses must all be text or all be message lists")
    if not getattr(tokenizer, "chat_template", None):
        raise DataError(
            "the rows are conversations (message lists), and the model's tokenizer has no chat template "
            "to render them: use a model (or model.tokenizer_path) whose tokenizer has one, or text rows"
        )
    prompt = tokenizer.apply_chat_template(record.prompt, tokenize=False, add_generation_prompt=True)
    responses = {
        name: _render_response(record.prompt, prompt, getattr(record, name), name, tokenizer)
        for name in _response_names(record)
    }
    return dataclasses.replace(record, prompt=prompt, **responses)


def tokenize_record(
    record: Record, tokenizer: Any, *, max_length: int, max_prompt_length: int
) -> Tokenized | str:
    """The record's token ids after truncation, or the reason (a str) it is dropped."""
    _check_lengths(max_length, max_prompt_length)
    reason = _text_drop_reason(record)
    if reason is not None:
        return reason
    written = record.prompt
    record = render(record, tokenizer)
    prompt_ids = _truncate_prompt(_encode_prompt(record.prompt, tokenizer), max_prompt_length, tokenizer)
    if not prompt_ids:
        return EMPTY_PROMPT
    budget = max_length - len(prompt_ids)  # >= 1, as max_prompt_length < max_length
    names = _response_names(record)
    full = [_encode_response(getattr(record, name), tokenizer, cut=_is_cut(record, name)) for name in names]
    responses = [ids[:budget] for ids in full]
    if not all(responses):
        return TRUNCATED_AWAY
    truncated = tuple(name for name, ids in zip(names, full, strict=True) if len(ids) > budget)
    if isinstance(record, UnpairedExample):
        return TokenizedUnpaired(prompt_ids, responses[0], record.desirable, truncated, prompt=written)
    chosen_ids, rejected_ids = responses
    if chosen_ids == rejected_ids:
        return CHOSEN_EQUALS_REJECTED
    scores = None if record.chosen_score is None else (record.chosen_score, record.rejected_score)
    return TokenizedPair(prompt_ids, chosen_ids, rejected_ids, truncated, scores, record.weight, written)


def tokenize_records(
    records: Iterable[Record], tokenizer: Any, *, max_length: int, max_prompt_length: int
) -> tuple[list[Tokenized], Counter[str]]:
    """(the kept examples in order, the number dropped for each reason)."""
    _check_lengths(max_length, max_prompt_length)
    kept: list[Tokenized] = []
    dropped: Counter[str] = Counter()
    for record in records:
        result = tokenize_record(
            record, tokenizer, max_length=max_length, max_prompt_length=max_prompt_length
        )
        if isinstance(result, str):
            dropped[result] += 1
        else:
            kept.append(result)
    return kept, dropped


def _check_lengths(max_length: int, max_prompt_length: int) -> None:
    if not 1 <= max_prompt_length < max_length:
        raise ValueError(
            f"need 1 <= max_prompt_length < max_length (room for a response), "
            f"got max_prompt_length={max_prompt_length}, max_length={max_length}"
        )


def _response_names(record: Record) -> tuple[str, ...]:
    return ("chosen", "rejected") if isinstance(record, PreferencePair) else ("completion",)


def _is_cut(record: Record, name: str) -> bool:
    """Whether the response `name` was marked cut before it ended (it gets no EOS)."""
    return getattr(record, "cut" if name == "completion" else f"{name}_cut")


def _render_response(
    prompt_messages: list, prompt: str, response_messages: Text, name: str, tokenizer: Any
) -> str:
    full = tokenizer.apply_chat_template(prompt_messages + response_messages, tokenize=False)
    if not full.startswith(prompt):
        raise DataError(
            "the chat template's rendering of prompt + response does not start with its rendering "
            f"of the prompt (add_generation_prompt=True), so the response cannot be cut out: "
            f"prompt {prompt[-60:]!r}, conversation {full[: len(prompt) + 20][-80:]!r}",
            field=name,
        )
    return full[len(prompt) :]


def _is_blank(text: Text) -> bool:
    if isinstance(text, str):
        return not text.strip()
    return not any(message["content"].strip() for message in text)


def _text_drop_reason(record: Record) -> str | None:
    """Drops decided on the text, before rendering (a template would make "" non-empty)."""
    if _is_blank(record.prompt):
        return EMPTY_PROMPT
    if any(_is_blank(getattr(record, name)) for name in _response_names(record)):
        return EMPTY_RESPONSE
    if isinstance(record, PreferencePair) and record.chosen == record.rejected:
        return CHOSEN_EQUALS_REJECTED
    return None


def _encode_prompt(text: str, tokenizer: Any) -> list[int]:
    # Special tokens on, so a tokenizer that adds BOS adds it once, at the very start.
    ids = tokenizer.encode(text, add_special_tokens=True)
    bos = tokenizer.bos_token_id
    # A chat template that writes BOS itself, plus the tokenizer's own, gives two: keep one.
    if bos is not None and ids[:2] == [bos, bos]:
        ids = ids[1:]
    return ids


def _encode_response(text: str, tokenizer: Any, *, cut: bool) -> list[int]:
    ids = tokenizer.encode(text, add_special_tokens=False)
    eos = tokenizer.eos_token_id
    # A chat template may already end the turn with EOS; one is enough. A cut response has none.
    if not cut and eos is not None and ids[-1:] != [eos]:
        ids.append(eos)
    return ids


def _truncate_prompt(ids: list[int], max_prompt_length: int, tokenizer: Any) -> list[int]:
    if len(ids) <= max_prompt_length:
        return ids
    bos = tokenizer.bos_token_id
    # Keep the end (the latest turns); a leading BOS stays first, as the model was trained.
    if bos is not None and ids[0] == bos:
        return [bos] + ids[len(ids) - max_prompt_length + 1 :]
    return ids[len(ids) - max_prompt_length :]
