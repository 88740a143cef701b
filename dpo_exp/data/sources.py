"""Data sources: functions that read a file into records, looked up by the name used in YAML.

A source is `source(path, **options) -> list[Record]`, with its options keyword-only with
defaults, so `load_records` can reject an option the source does not take. Built-in sources:

- `pairs`: preference pairs from JSONL / JSON / Parquet. Each value is text or a list of chat
  messages. TRL-style conversational rows without a prompt column (chosen and rejected are
  whole conversations) are split at their longest shared prefix of messages. There is no
  separate `conversational` source: `pairs` and `unpaired` read message lists as they are.
- `hh_rlhf`: Anthropic HH-RLHF transcripts `{"chosen", "rejected"}`.
- `unpaired`: KTO rows `{"prompt", "completion", "label": bool}`.

`pairs` and `unpaired` rows may mark a text response as cut where its generator stopped
before it ended (the built-in experiment's samples that reached max_new_tokens): optional
JSON bools `chosen_cut`, `rejected_cut` (pairs) and `cut` (unpaired); such a response gets no
EOS. An absent or null field is false.
- `synthetic`: generated addition pairs (no file), a fixed dataset for quick runs.

Loading checks types and presence only; empty prompts or responses and identical pairs are
kept here and dropped, and counted, by tokenisation. Every error is a `DataError` that names
the file, the 0-based row (the line index in a JSONL file) and the field. Files are read into
rows by `files.py`.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from typing import Any

from dpo_exp.data.files import describe, line_of_row, read_rows
from dpo_exp.data.records import DataError, PreferencePair, Record, Text, UnpairedExample
from dpo_exp.tasks import arithmetic as arithmetic_task

Source = Callable[..., list[Record]]
SOURCES: dict[str, Source] = {}

HH_ASSISTANT = "\n\nAssistant:"
# The roles chat templates know; another (a typo such as "usr", or "Human") would be rendered as
# text by a lenient template, or fail deep inside a strict one.
CHAT_ROLES = ("system", "developer", "user", "assistant", "tool", "function", "ipython")


# --- registry ---------------------------------------------------------------------------


def register_source(name: str) -> Callable[[Source], Source]:
    """Decorator: make `source` available to YAML as `name`."""

    def register(source: Source) -> Source:
        if name in SOURCES:
            raise ValueError(f"data source '{name}' is already registered")
        SOURCES[name] = source
        return source

    return register


def get_source(name: str) -> Source:
    """The source registered as `name`; an unknown name lists the valid ones."""
    if name not in SOURCES:
        valid = ", ".join(sorted(SOURCES))
        raise DataError(f"unknown data source '{name}'; valid sources: {valid}")
    return SOURCES[name]


def load_records(source: str, path: str | None, **options: Any) -> list[Record]:
    """Look up `source` and call it as `source(path, **options)`, after checking the options."""
    function = get_source(source)
    _check_options(source, function, options)
    return function(path, **options)


def _check_options(name: str, function: Source, options: dict[str, Any]) -> None:
    # The options are the keyword parameters after `path`; a typo must fail, not be ignored.
    parameters = list(inspect.signature(function).parameters.values())[1:]
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return
    valid = [p.name for p in parameters if p.kind is not inspect.Parameter.VAR_POSITIONAL]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise DataError(
            f"unknown option(s) {', '.join(unknown)} for data source '{name}'; "
            f"valid options: {', '.join(valid) or '(none)'}"
        )
    missing = [p.name for p in parameters if p.default is inspect.Parameter.empty]
    missing = [option for option in missing if option not in options]
    if missing:
        raise DataError(f"data source '{name}' needs option(s): {', '.join(missing)}")


def to_unpaired(pairs: list[PreferencePair]) -> list[UnpairedExample]:
    """Each pair -> its chosen (desirable) then its rejected (undesirable) example, in order."""
    examples = []
    for pair in pairs:
        examples.append(UnpairedExample(pair.prompt, pair.chosen, desirable=True, cut=pair.chosen_cut))
        examples.append(UnpairedExample(pair.prompt, pair.rejected, desirable=False, cut=pair.rejected_cut))
    return examples


# --- sources ----------------------------------------------------------------------------


@register_source("pairs")
def pairs(
    path: str | None,
    *,
    prompt_field: str = "prompt",
    chosen_field: str = "chosen",
    rejected_field: str = "rejected",
    max_rows: int | None = None,
) -> list[Record]:
    """Preference pairs; values are text or message lists.

    A file without `prompt_field` in any row, whose chosen and rejected are message lists,
    holds TRL-style conversations: the prompt is the longest shared prefix of messages and
    the responses what follows (the prefix stops one short of the shorter conversation, so
    each response keeps at least its last message). Where some rows have the prompt field,
    a row without it is an error, as `datasets` reads it as null.
    """
    file, rows = read_rows(path, max_rows)
    # Decided per file, not per row, so the answer does not depend on how the file was read.
    implicit_prompt = all(prompt_field not in row for row in rows)
    records: list[Record] = []
    for row_index, row in enumerate(rows):
        where = _Where(file, path, row_index)
        chosen = _text(row, chosen_field, where)
        rejected = _text(row, rejected_field, where)
        cut = {
            "chosen_cut": _cut_flag(row, "chosen_cut", chosen, where),
            "rejected_cut": _cut_flag(row, "rejected_cut", rejected, where),
        }
        if implicit_prompt and isinstance(chosen, list) and isinstance(rejected, list):
            records.append(_split_conversations(chosen, rejected))
            continue
        prompt = _text(row, prompt_field, where)
        records.append(PreferencePair(prompt=prompt, chosen=chosen, rejected=rejected, **cut))
    return records


@register_source("hh_rlhf")
def hh_rlhf(path: str | None, *, max_rows: int | None = None) -> list[Record]:
    """Anthropic HH-RLHF transcripts `{"chosen": str, "rejected": str}`.

    The prompt is everything up to and including the last "\\n\\nAssistant:" that lies inside
    the longest common prefix of the two transcripts. Splitting each transcript on its own
    last marker is wrong where a response continues the dialogue by itself; splitting at the
    raw common prefix cuts into responses that start alike (" I ..."). The responses keep
    their leading space, so `chosen == prompt + response` exactly.
    """
    file, rows = read_rows(path, max_rows)
    records: list[Record] = []
    for row_index, row in enumerate(rows):
        where = _Where(file, path, row_index)
        chosen = _string(row, "chosen", where)
        rejected = _string(row, "rejected", where)
        shared = len(os.path.commonprefix([chosen, rejected]))
        marker = chosen.rfind(HH_ASSISTANT, 0, shared)
        if marker < 0:  # rfind's end bound keeps the whole marker inside the shared text
            raise where.error(f"no {HH_ASSISTANT!r} in the text shared by chosen and rejected", "chosen")
        cut = marker + len(HH_ASSISTANT)
        records.append(PreferencePair(chosen[:cut], chosen[cut:], rejected[cut:]))
    return records


@register_source("unpaired")
def unpaired(
    path: str | None,
    *,
    prompt_field: str = "prompt",
    completion_field: str = "completion",
    label_field: str = "label",
    max_rows: int | None = None,
) -> list[Record]:
    """KTO rows: prompt, completion (text or message lists) and a bool label (true = desirable)."""
    file, rows = read_rows(path, max_rows)
    records: list[Record] = []
    for row_index, row in enumerate(rows):
        where = _Where(file, path, row_index)
        prompt = _text(row, prompt_field, where)
        completion = _text(row, completion_field, where)
        label = row.get(label_field)
        # `type(...) is bool`: 0/1 or "true" would pass a looser check and hide a bad column.
        if type(label) is not bool:
            raise where.error(f"expected a bool label, got {describe(label)}", label_field)
        cut = _cut_flag(row, "cut", completion, where)
        records.append(UnpairedExample(prompt, completion, desirable=label, cut=cut))
    return records


@register_source("synthetic")
def synthetic(path: None, *, num_examples: int, digits: int = 3, seed: int = 0) -> list[Record]:
    """Generated addition problems (no file): chosen the correct reversed sum, rejected a near miss."""
    if path is not None:
        raise DataError(
            "the synthetic source is generated from a seed and reads no file; set train_path: null"
        )
    return [
        PreferencePair(*row)
        for row in arithmetic_task.preference_pairs(num_examples, digits=digits, seed=seed)
    ]


def _split_conversations(chosen: list, rejected: list) -> PreferencePair:
    shared = 0
    limit = min(len(chosen), len(rejected)) - 1
    while shared < limit and chosen[shared] == rejected[shared]:
        shared += 1
    return PreferencePair(chosen[:shared], chosen[shared:], rejected[shared:])


# --- row validation ---------------------------------------------------------------------


class _Where:
    """Where a row came from, to build located errors (JSONL rows are reported as lines)."""

    def __init__(self, file: str, path: str | None, row: int) -> None:
        self.file, self.path, self.row = file, path, row

    def error(self, message: str, field: str) -> DataError:
        return DataError(message, file=self.path, row=line_of_row(self.file, self.row), field=field)


def _string(row: dict[str, Any], field: str, where: _Where) -> str:
    value = row.get(field)
    if not isinstance(value, str):
        raise where.error(f"expected a string, got {describe(value)}", field)
    return value


def _cut_flag(row: dict[str, Any], field: str, response: Text, where: _Where) -> bool:
    """An optional bool: whether `response` was cut before it ended (absent or null: false)."""
    value = row.get(field)
    if value is None:
        return False
    if type(value) is not bool:  # as for labels: 0/1 or "true" would hide a bad column
        raise where.error(f"expected a bool (or no field), got {describe(value)}", field)
    if value and isinstance(response, list):
        raise where.error("only a text response can be marked cut: a chat template ends every turn", field)
    return value


def _text(row: dict[str, Any], field: str, where: _Where) -> Text:
    """A string, or a list of messages, each a dict with string `role` and `content`."""
    value = row.get(field)
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise where.error(f"expected a string or a list of messages, got {describe(value)}", field)
    messages = []
    for index, message in enumerate(value):
        if not isinstance(message, dict):
            raise where.error(f"message {index} is {describe(message)}, not an object", field)
        for key in ("role", "content"):
            if not isinstance(message.get(key), str):
                got = describe(message.get(key))
                raise where.error(f"message {index} '{key}' must be a string, got {got}", field)
        if message["role"] not in CHAT_ROLES:
            roles = ", ".join(CHAT_ROLES)
            raise where.error(
                f"message {index} has role {message['role']!r}; a role is one of {roles}", field
            )
        # Columnar formats fill keys absent from a message with null; drop them again.
        messages.append({key: item for key, item in message.items() if item is not None})
    return messages
