"""Reading a data file into rows: JSONL, JSON or Parquet, with `datasets`, and rediagnosed with
`json` where `datasets` fails or would change values; where a row lies in its file.

Every error is a `DataError` naming the file (and the line, for a malformed JSON line).
"""

from __future__ import annotations

import gzip
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dpo_exp.data.records import DataError

# Extension -> `datasets` builder name. JSON may be a list of objects or JSON Lines.
_BUILDERS = {
    ".jsonl": "json",
    ".jsonl.gz": "json",
    ".json": "json",
    ".json.gz": "json",
    ".parquet": "parquet",
}


def describe(value: Any) -> str:
    """A value as an error message shows it: its type and its start."""
    if value is None:
        return "null (or the field is missing)"
    return f"{type(value).__name__} {value!r}"[:80]


def read_rows(path: str | None, max_rows: int | None) -> tuple[str, list[dict[str, Any]]]:
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
        raise DataError(f"expected a JSON object, got {describe(row)}", file=path, row=row_index)
    return row


def _open_text(file: str, path: str | None) -> str:
    try:
        if file.endswith(".gz"):
            with gzip.open(file, "rt", encoding="utf-8") as handle:
                return handle.read()
        return Path(file).read_text(encoding="utf-8")
    except (OSError, EOFError, UnicodeDecodeError) as error:
        raise DataError(f"could not read the file: {error}", file=path) from error


def line_of_row(file: str, row: int) -> int:
    """The 0-based line of record `row` in a JSONL file, whose blank lines `datasets` skips."""
    if _extension(file) not in (".jsonl", ".jsonl.gz"):
        return row
    records = -1
    for line_index, line in enumerate(_open_text(file, None).splitlines()):
        records += bool(line.strip())
        if records == row:
            return line_index
    return row
