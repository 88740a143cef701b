"""Data sources: functions that read a file into records, looked up by the name used in YAML.

A source is `source(path, **options) -> list[Record]`, with its options keyword-only with
defaults, so `load_records` can reject an option the source does not take. Built-in sources:

- `pairs`: preference pairs from JSONL / JSON / Parquet. Each value is text or a list of chat
  messages. TRL-style conversational rows without a prompt column (chosen and rejected are
  whole conversations) are split at their longest shared prefix of messages. There is no
  separate `conversational` source: `pairs` and `unpaired` read message lists as they are.
- `hh_rlhf`: Anthropic HH-RLHF transcripts `{"chosen", "rejected"}`.
- `unpaired`: KTO rows `{"prompt", "completion", "label": bool}`.
- `synthetic`: generated addition pairs (no file), a fixed dataset for quick runs.

Loading checks types and presence only; empty prompts or responses and identical pairs are
kept here and dropped, and counted, by tokenisation. Every error is a `DataError` that names
the file, the 0-based row (the line index in a JSONL file) and the field.
"""

from __future__ import annotations

import gzip
import inspect
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from dpo_exp.data.records import DataError, PreferencePair, Record, Text, UnpairedExample
from dpo_exp.tasks import arithmetic as arithmetic_task

Source = Callable[..., list[Record]]
SOURCES: dict[str, Source] = {}

# Extension -> `datasets` builder name. JSON may be a list of objects or JSON Lines.
_BUILDERS = {
    ".jsonl": "json",
    ".jsonl.gz": "json",
    ".json": "json",
    ".json.gz": "json",
    ".parquet": "parquet",
}
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
        examples.append(UnpairedExample(pair.prompt, pair.chosen, desirable=True))
        examples.append(UnpairedExample(pair.prompt, pair.rejected, desirable=False))
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
    file, rows = _read_rows(path, max_rows)
    # Decided per file, not per row, so the answer does not depend on how the file was read.
    implicit_prompt = all(prompt_field not in row for row in rows)
    records: list[Record] = []
    for row_index, row in enumerate(rows):
        where = _Where(file, path, row_index)
        chosen = _text(row, chosen_field, where)
        rejected = _text(row, rejected_field, where)
        if implicit_prompt and isinstance(chosen, list) and isinstance(rejected, list):
            records.append(_split_conversations(chosen, rejected))
            continue
        prompt = _text(row, prompt_field, where)
        records.append(PreferencePair(prompt=prompt, chosen=chosen, rejected=rejected))
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
    file, rows = _read_rows(path, max_rows)
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
    file, rows = _read_rows(path, max_rows)
    records: list[Record] = []
    for row_index, row in enumerate(rows):
        where = _Where(file, path, row_index)
        prompt = _text(row, prompt_field, where)
        completion = _text(row, completion_field, where)
        label = row.get(label_field)
        # `type(...) is bool`: 0/1 or "true" would pass a looser check and hide a bad column.
        if type(label) is not bool:
            raise where.error(f"expected a bool label, got {_describe(label)}", label_field)
        records.append(UnpairedExample(prompt, completion, desirable=label))
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
        return DataError(message, file=self.path, row=_line_of_row(self.file, self.row), field=field)


def _string(row: dict[str, Any], field: str, where: _Where) -> str:
    value = row.get(field)
    if not isinstance(value, str):
        raise where.error(f"expected a string, got {_describe(value)}", field)
    return value


def _text(row: dict[str, Any], field: str, where: _Where) -> Text:
    """A string, or a list of messages, each a dict with string `role` and `content`."""
    value = row.get(field)
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise where.error(f"expected a string or a list of messages, got {_describe(value)}", field)
    messages = []
    for index, message in enumerate(value):
        if not isinstance(message, dict):
            raise where.error(f"message {index} is {_describe(message)}, not an object", field)
        for key in ("role", "content"):
            if not isinstance(message.get(key), str):
                got = _describe(message.get(key))
                raise where.error(f"message {index} '{key}' must be a string, got {got}", field)
        if message["role"] not in CHAT_ROLES:
            roles = ", ".join(CHAT_ROLES)
            raise where.error(
                f"message {index} has role {message['role']!r}; a role is one of {roles}", field
            )
        # Columnar formats fill keys absent from a message with null; drop them again.
        messages.append({key: item for key, item in message.items() if item is not None})
    return messages


def _describe(value: Any) -> str:
    if value is None:
        return "null (or the field is missing)"
    return f"{type(value).__name__} {value!r}"[:80]


# --- file reading -----------------------------------------------------------------------


def _read_rows(path: str | None, max_rows: int | None) -> tuple[str, list[dict[str, Any]]]:
    """(the resolved file, its first `max_rows` rows as dicts), read with `datasets`."""
    if max_rows is not None and (type(max_rows) is not int or max_rows < 1):
        raise DataError(f"max_rows must be a positive int or null, got {max_rows!r}", file=path)
    file = _resolve(path)
    rows = _load_with_datasets(file, path)
    if not rows:
        raise DataError("the data file has no rows", file=path)
    return file, rows[:max_rows]


def _resolve(path: str | None) -> str:
    if path is None:
        raise DataError("this data source reads a file, but no path was given")
    file = Path(path).expanduser()
    if not file.is_file():
        raise DataError("data file not found", file=path)
    if _extension(str(file)) not in _BUILDERS:
        supported = ", ".join(_BUILDERS)
        raise DataError(f"unsupported file type; expected one of: {supported}", file=path)
    return str(file)


def _extension(file: str) -> str:
    name = Path(file).name
    for extension in sorted(_BUILDERS, key=len, reverse=True):
        if name.endswith(extension):
            return extension
    return Path(file).suffix


def _load_with_datasets(file: str, path: str | None) -> list[dict[str, Any]]:
    import datasets  # imported here: it is slow to import, and only loading needs it

    builder = _BUILDERS[_extension(file)]
    try:
        # A throw-away cache: nothing is left behind, and an edited file is never served stale.
        with tempfile.TemporaryDirectory() as cache_dir:
            dataset = datasets.load_dataset(
                builder, data_files=file, split="train", cache_dir=cache_dir, keep_in_memory=True
            )
            mixed_types = _has_json_feature(dataset.features)
            rows = dataset.to_list()
    except Exception as error:  # any failure: rediagnosed (JSON) or wrapped (Parquet) below
        if builder != "json":
            raise DataError(f"could not read the file: {error}", file=path) from error
        # `datasets` names neither the line nor the problem. Parsing the file ourselves raises
        # at the first bad line or, if every line is valid JSON, reads the rows exactly.
        return list(_json_rows(file, path))
    if mixed_types:
        # A column that mixes types (text and message lists, or a stray number) gets the `Json`
        # feature, which decodes strings that look like JSON ("null" -> None, "true" -> True):
        # read such a file exactly, so the checks see the values as written.
        return list(_json_rows(file, path))
    return rows


def _has_json_feature(feature: Any) -> bool:
    import datasets

    if isinstance(feature, datasets.Json):
        return True
    if isinstance(feature, dict):  # Features, or a struct of fields
        return any(_has_json_feature(inner) for inner in feature.values())
    if isinstance(feature, list | tuple):
        return any(_has_json_feature(inner) for inner in feature)
    inner = getattr(feature, "feature", None)  # List / LargeList
    return inner is not None and _has_json_feature(inner)


def _json_rows(file: str, path: str | None) -> Iterator[dict[str, Any]]:
    """The file's rows, parsed with `json`; raises a DataError at the first bad line."""
    text = _open_text(file, path)
    if _extension(file) in (".json", ".json.gz"):
        try:
            document = json.loads(text)
        except json.JSONDecodeError:
            document = None  # maybe JSON Lines under a .json name: read it line by line
        if isinstance(document, dict):
            document = [document]
        if isinstance(document, list):
            for row_index, row in enumerate(document):
                yield _json_object(row, path, row_index)
            return
    for line_index, line in enumerate(text.splitlines()):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"malformed JSON: {error}", file=path, row=line_index) from None
        yield _json_object(row, path, line_index)


def _json_object(row: Any, path: str | None, row_index: int) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise DataError(f"expected a JSON object, got {_describe(row)}", file=path, row=row_index)
    return row


def _open_text(file: str, path: str | None) -> str:
    try:
        if file.endswith(".gz"):
            with gzip.open(file, "rt", encoding="utf-8") as handle:
                return handle.read()
        return Path(file).read_text(encoding="utf-8")
    except (OSError, EOFError, UnicodeDecodeError) as error:
        raise DataError(f"could not read the file: {error}", file=path) from error


def _line_of_row(file: str, row: int) -> int:
    """The 0-based line of record `row` in a JSONL file, whose blank lines `datasets` skips."""
    if _extension(file) not in (".jsonl", ".jsonl.gz"):
        return row
    records = -1
    for line_index, line in enumerate(_open_text(file, None).splitlines()):
        records += bool(line.strip())
        if records == row:
            return line_index
    return row
