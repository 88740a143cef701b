"""Data sources: functions that read rows into records, looked up by the name used in YAML.

A source is `source(location, **options) -> LoadedRecords`, with its options keyword-only with
defaults, so `load_source` can reject an option the source does not take. The location is a file
or a dataset split (`dpo_exp.rows`). Built-in sources:

- `pairs`: preference pairs in any of TRL's paired formats (`formats.py`: standard,
  conversational, implicit prompt), recognised per row and reported per file.
- `hh_rlhf`: Anthropic HH-RLHF transcripts `{"chosen", "rejected"}` (implicit prompt), strictly:
  a row without a shared "\n\nAssistant:" is an error.
- `unpaired`: KTO rows `{"prompt", "completion", "label": bool}`, text or message lists.

`pairs` and `unpaired` rows may mark a text response as cut where its generator stopped
before it ended (the built-in experiment's samples that reached max_new_tokens): optional
JSON bools `chosen_cut`, `rejected_cut` (pairs) and `cut` (unpaired); such a response gets no
EOS. An absent or null field is false.
- `synthetic`: generated addition pairs (no file), a fixed dataset for quick runs.

Loading checks types and presence only; empty prompts or responses and identical pairs are
kept here and dropped, and counted, by tokenisation. Every error is a `DataError` that names
the file or dataset, the line (1-based, in a JSONL file) or the 0-based row, and the field.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dpo_exp.data.formats as formats
from dpo_exp.data.records import DataError, PreferencePair, Record, Text, UnpairedExample
from dpo_exp.rows import Location, describe, position_of_row, read_rows
from dpo_exp.tasks import arithmetic as arithmetic_task


@dataclass(frozen=True)
class LoadedRecords:
    """What a source read: its records, the row format it recognised, and where it read them."""

    records: list[Record]
    format: str
    where: str


Source = Callable[..., LoadedRecords | list[Record]]
SOURCES: dict[str, Source] = {}
GENERATED: set[str] = set()  # sources that read nothing: their location is None
# The roles chat templates know; another (a typo such as "usr", or "Human") would be rendered as
# text by a lenient template, or fail deep inside a strict one.
CHAT_ROLES = ("system", "developer", "user", "assistant", "tool", "function", "ipython")


# --- registry ---------------------------------------------------------------------------


def register_source(name: str, *, reads_rows: bool = True) -> Callable[[Source], Source]:
    """Decorator: make `source` available to YAML as `name`; `reads_rows=False` for a source that
    generates its records and reads no file or dataset."""

    def register(source: Source) -> Source:
        if name in SOURCES:
            raise ValueError(f"data source '{name}' is already registered")
        SOURCES[name] = source
        if not reads_rows:
            GENERATED.add(name)
        return source

    return register


def get_source(name: str) -> Source:
    """The source registered as `name`; an unknown name lists the valid ones."""
    if name not in SOURCES:
        valid = ", ".join(sorted(SOURCES))
        raise DataError(f"unknown data source '{name}'; valid sources: {valid}")
    return SOURCES[name]


def load_source(source: str, location: Location, **options: Any) -> LoadedRecords:
    """Look up `source` and call it as `source(location, **options)`, after checking the options."""
    function = get_source(source)
    _check_options(source, function, options)
    loaded = function(location, **options)
    if not isinstance(loaded, LoadedRecords):  # a source of one's own may return its records only
        loaded = LoadedRecords(list(loaded), f"records of source '{source}'", str(location or f"<{source}>"))
    return loaded


def load_records(source: str, location: Location, **options: Any) -> list[Record]:
    """The records of `load_source`, without their format."""
    return load_source(source, location, **options).records


def _check_options(name: str, function: Source, options: dict[str, Any]) -> None:
    # The options are the keyword parameters after `location`; a typo must fail, not be ignored.
    parameters = list(inspect.signature(function).parameters.values())[1:]
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return
    valid = [p.name for p in parameters if p.kind is not inspect.Parameter.VAR_POSITIONAL]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        close = difflib.get_close_matches(unknown[0], valid, n=1, cutoff=0.5)
        raise DataError(
            f"unknown option(s) {', '.join(unknown)} for data source '{name}'"
            + (f" (did you mean data.options.{close[0]}?)" if close else "")
            + f"; valid options: {', '.join(valid) or '(none)'}"
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
    location: Location,
    *,
    prompt_field: str = "prompt",
    chosen_field: str = "chosen",
    rejected_field: str = "rejected",
    chosen_score_field: str = "score_chosen",
    rejected_score_field: str = "score_rejected",
    weight_field: str = "weight",
    max_rows: int | None = None,
) -> LoadedRecords:
    """Preference pairs in TRL's paired formats (`formats.py`), recognised row by row.

    A row without `prompt_field`, or with a text prompt beside conversations, has an implicit
    prompt: the shared prefix of chosen and rejected. Where some rows have the prompt field, a
    row without it is an error, as `datasets` reads it as null. Unpaired rows are refused with
    the source that reads them. Each response's reward (`score_chosen`, `score_rejected`, as
    UltraFeedback names them) and the pair's weight are read where the file has those columns;
    then every row must hold a finite number in each.
    """
    where_read, rows = read_rows(location, max_rows)
    # Decided per file, not per row, so the answer does not depend on how the file was read.
    has_prompt = any(prompt_field in row for row in rows)
    number_fields = (chosen_score_field, rejected_score_field, weight_field)
    present = [field for field in number_fields if any(field in row for row in rows)]
    if rows:
        _check_pair_columns(rows[0], has_prompt, (prompt_field, chosen_field, rejected_field), where_read)
    records: list[Record] = []
    kinds: Counter[str] = Counter()
    for row_index, row in enumerate(rows):
        where = RowWhere(where_read, location, row_index)
        if chosen_field not in row and "completion" in row and "label" in row:
            raise where.error(
                "this row is unpaired (prompt, completion, label): KTO's format, read by data=unpaired",
                chosen_field,
            )
        record, kind = _pair(row, where, has_prompt, (prompt_field, chosen_field, rejected_field))
        if present:
            record = _with_numbers(record, row, where, present, number_fields)
        records.append(record)
        kinds[kind] += 1
    return LoadedRecords(records, formats.describe_formats(kinds), where_read)


# Columns a pairs row may hold beside its prompt and responses, which carry no text of the pair.
PAIR_MARKS = ("chosen_cut", "rejected_cut")


def _check_pair_columns(
    row: dict[str, Any], has_prompt: bool, fields: tuple[str, str, str], where: str
) -> None:
    """A column set that matches no pairs format is one error naming the file and its columns:
    no chosen or rejected column; or no prompt column, another text column beside them, and
    chosen and rejected that share no prompt (a prompt under another name, which would otherwise
    be read as the implicit prompt, the responses' shared start, cut inside a word)."""
    prompt_field, chosen_field, rejected_field = fields
    columns = ", ".join(row)
    if chosen_field not in row or rejected_field not in row:
        if "completion" in row and "label" in row:
            return  # an unpaired row: refused row by row, naming data=unpaired
        raise DataError(
            f"columns {columns}: no pairs format has these (chosen and rejected, and a prompt or not); "
            "name yours with data.options.prompt_field, chosen_field, rejected_field",
            file=where,
        )
    texts = [
        name for name, value in row.items()
        if name not in (*fields, *PAIR_MARKS) and (isinstance(value, str) or _is_messages(value))
    ]  # fmt: skip
    if has_prompt or not texts or _shares_a_prompt(row[chosen_field], row[rejected_field]):
        return
    raise DataError(
        f"columns {columns}: no '{prompt_field}' column, and chosen and rejected share no prompt; "
        f"if {texts[0]} is the prompt: data.options.prompt_field={texts[0]}",
        file=where,
    )


def _shares_a_prompt(chosen: Any, rejected: Any) -> bool:
    """Whether the implicit prompt of chosen and rejected is whole: not empty, and for text, ending
    where a word does."""
    split = formats.split_implicit(chosen, rejected)
    if split is None or not split[0].prompt:
        return False
    prompt, response = split[0].prompt, split[0].chosen
    if isinstance(prompt, list):
        return True
    return not (prompt[-1].isalnum() and isinstance(response, str) and response[:1].isalnum())


def _is_messages(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(item, dict) for item in value)


def _pair(
    row: dict[str, Any], where: RowWhere, has_prompt: bool, fields: tuple[str, str, str]
) -> tuple[PreferencePair, str]:
    """(the row's pair, its format)."""
    prompt_field, chosen_field, rejected_field = fields
    chosen = text_field(row, chosen_field, where)
    rejected = text_field(row, rejected_field, where)
    cut = {
        "chosen_cut": _cut_flag(row, "chosen_cut", chosen, where),
        "rejected_cut": _cut_flag(row, "rejected_cut", rejected, where),
    }
    prompt = text_field(row, prompt_field, where) if has_prompt else None
    if isinstance(chosen, list) != isinstance(rejected, list):
        raise where.error("chosen and rejected must both be text or both be message lists", rejected_field)
    if formats.is_implicit(prompt, chosen):
        pair, kind = formats.split_implicit(chosen, rejected)
        return PreferencePair(pair.prompt, pair.chosen, pair.rejected, **cut), kind
    if isinstance(prompt, list) != isinstance(chosen, list):
        raise where.error("a message-list prompt needs message-list responses", chosen_field)
    return PreferencePair(prompt, chosen, rejected, **cut), formats.explicit_format(prompt, chosen)


def _with_numbers(
    record: PreferencePair,
    row: dict[str, Any],
    where: RowWhere,
    present: list[str],
    fields: tuple[str, str, str],
) -> PreferencePair:
    """The pair with its rewards and weight, read from the number `fields` the file has (`present`)."""
    chosen, rejected, weight = (_number(row, field, where) if field in present else None for field in fields)
    if (chosen is None) != (rejected is None):
        missing = fields[0] if chosen is None else fields[1]
        raise where.error("the file gives one response's reward but not the other's", missing)
    if weight is not None and weight < 0:
        raise where.error(f"a pair's weight must be >= 0, got {weight:g}", fields[2])
    return dataclasses.replace(record, chosen_score=chosen, rejected_score=rejected, weight=weight)


def _number(row: dict[str, Any], field: str, where: RowWhere) -> float:
    value = row.get(field)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise where.error(f"must be a finite number (the file has this column), got {value!r}", field)
    return float(value)


@register_source("hh_rlhf")
def hh_rlhf(location: Location, *, max_rows: int | None = None) -> LoadedRecords:
    """Anthropic HH-RLHF transcripts `{"chosen": str, "rejected": str}`, split by
    `formats.split_implicit`'s transcript rule. The responses keep their leading space, so
    `chosen == prompt + response` exactly.
    """
    where_read, rows = read_rows(location, max_rows)
    records: list[Record] = []
    for row_index, row in enumerate(rows):
        where = RowWhere(where_read, location, row_index)
        split = formats.split_implicit(_string(row, "chosen", where), _string(row, "rejected", where))
        if split[1] != formats.IMPLICIT_TRANSCRIPT:
            message = f"no {formats.HH_ASSISTANT!r} in the text shared by chosen and rejected"
            raise where.error(message, "chosen")
        records.append(split[0])
    return LoadedRecords(records, formats.IMPLICIT_TRANSCRIPT, where_read)


@register_source("unpaired")
def unpaired(
    location: Location,
    *,
    prompt_field: str = "prompt",
    completion_field: str = "completion",
    label_field: str = "label",
    max_rows: int | None = None,
) -> LoadedRecords:
    """KTO rows: prompt, completion (text or message lists) and a bool label (true = desirable)."""
    where_read, rows = read_rows(location, max_rows)
    records: list[Record] = []
    for row_index, row in enumerate(rows):
        where = RowWhere(where_read, location, row_index)
        prompt = text_field(row, prompt_field, where)
        completion = text_field(row, completion_field, where)
        label = row.get(label_field)
        # `type(...) is bool`: 0/1 or "true" would pass a looser check and hide a bad column.
        if type(label) is not bool:
            raise where.error(f"expected a bool label, got {describe(label)}", label_field)
        cut = _cut_flag(row, "cut", completion, where)
        if isinstance(prompt, list) != isinstance(completion, list):
            raise where.error(
                "prompt and completion must both be text or both be message lists", completion_field
            )
        records.append(UnpairedExample(prompt, completion, desirable=label, cut=cut))
    kind = formats.UNPAIRED_CONVERSATIONAL if isinstance(records[0].prompt, list) else formats.UNPAIRED
    return LoadedRecords(records, kind, where_read)


@register_source("synthetic", reads_rows=False)
def synthetic(location: None, *, num_examples: int, digits: int = 3, seed: int = 0) -> LoadedRecords:
    """Generated addition problems (no file): chosen the correct reversed sum, rejected a near miss."""
    if location is not None:
        raise DataError(
            "the synthetic source is generated from a seed and reads no file or dataset; "
            "set data.train_path and data.dataset to null"
        )
    rows = arithmetic_task.preference_pairs(num_examples, digits=digits, seed=seed)
    return LoadedRecords([PreferencePair(*row) for row in rows], formats.STANDARD, "<synthetic>")


# --- row validation ---------------------------------------------------------------------


class RowWhere:
    """Where a row came from, to build located errors (JSONL rows are reported as lines)."""

    def __init__(self, where_read: str, location: Location, row: int) -> None:
        self.where_read, self.location, self.row = where_read, location, row

    def error(self, message: str, field: str) -> DataError:
        if isinstance(self.location, str):  # a file: the row's line, the path as the user gave it
            return DataError(
                message, file=self.location, field=field, **position_of_row(self.where_read, self.row)
            )
        return DataError(message, file=self.where_read, row=self.row, field=field)


def _string(row: dict[str, Any], field: str, where: RowWhere) -> str:
    value = row.get(field)
    if not isinstance(value, str):
        raise where.error(f"expected a string, got {describe(value)}", field)
    return value


def _cut_flag(row: dict[str, Any], field: str, response: Text, where: RowWhere) -> bool:
    """An optional bool: whether `response` was cut before it ended (absent or null: false)."""
    value = row.get(field)
    if value is None:
        return False
    if type(value) is not bool:  # as for labels: 0/1 or "true" would hide a bad column
        raise where.error(f"expected a bool (or no field), got {describe(value)}", field)
    if value and isinstance(response, list):
        raise where.error("only a text response can be marked cut: a chat template ends every turn", field)
    return value


def text_field(row: dict[str, Any], field: str, where: RowWhere) -> Text:
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
