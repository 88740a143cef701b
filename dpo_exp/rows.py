"""Reading rows: from a data file (JSONL, JSON or Parquet) or from a dataset split by hub id or
local folder, both through `datasets`; where a row lies in its file.

A location is a file path (`str`) or a `DatasetSplit`: a dataset named as `datasets.load_dataset`
names it (a hub id such as "Anthropic/hh-rlhf", or a local folder laid out as a dataset
repository), with its revision, subset (config name), data_dir and split. Hub datasets are cached
in the usual HF cache. A file is read with `datasets` and rediagnosed with `json` where `datasets`
fails or would change values. Every error is a `DataError` naming the file or dataset (and the
line, for a malformed JSON line).
"""

from __future__ import annotations

import gzip
import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dpo_exp.errors import DataError

# Extension -> `datasets` builder name. JSON may be a list of objects or JSON Lines.
_BUILDERS = {
    ".jsonl": "json",
    ".jsonl.gz": "json",
    ".json": "json",
    ".json.gz": "json",
    ".parquet": "parquet",
    ".csv": "csv",
}


@dataclass(frozen=True)
class DatasetSplit:
    """One split of a dataset, as `datasets.load_dataset(dataset, subset, data_dir=..., revision=...)`
    reads it. `dataset` is a hub id or a local folder laid out as the dataset's repository."""

    dataset: str
    split: str
    revision: str | None = None
    subset: str | None = None
    data_dir: str | None = None

    def __str__(self) -> str:
        """How errors and reports name it: `Anthropic/hh-rlhf@09be8c5 (data_dir helpful-base, split test)`."""
        name = self.dataset + (f"@{self.revision[:7]}" if self.revision else "")
        parts = [
            f"subset {self.subset}" if self.subset else "",
            f"data_dir {self.data_dir}" if self.data_dir else "",
        ]
        return f"{name} ({', '.join([part for part in parts if part] + [f'split {self.split}'])})"

    @property
    def is_local(self) -> bool:
        """Whether `dataset` names a local folder rather than a hub id."""
        return is_local_dataset(self.dataset)


# Where records come from: a file's path, a dataset split, or nothing (a generated source).
Location = str | DatasetSplit | None


def is_local_dataset(dataset: str) -> bool:
    """A local folder, or a path that reads as one (absolute, relative or home): not a hub id."""
    return Path(dataset).expanduser().is_dir() or dataset.startswith(("/", "./", "../", "~"))


def describe(value: Any) -> str:
    """A value as an error message shows it: its type and its start."""
    if value is None:
        return "null (or the field is missing)"
    return f"{type(value).__name__} {value!r}"[:80]


# How to read a local copy instead of the hub, as the data config spells it.
LOCAL_COPY_HINT = (
    "data.dataset=<a folder laid out as the hub repository> data.revision=null, or data.train_path=<a file>"
)


def read_rows(
    location: Location, max_rows: int | None, *, local_copy_hint: str = LOCAL_COPY_HINT
) -> tuple[str, list[dict[str, Any]]]:
    """(the file or dataset as errors name it, its first `max_rows` rows as dicts).

    `local_copy_hint` ends the one-line error of a hub dataset that cannot be loaded (offline with
    no cached copy, say): how the caller's config points at a local copy instead."""
    if max_rows is not None and (type(max_rows) is not int or max_rows < 1):
        raise DataError(f"max_rows must be a positive int or null, got {max_rows!r}", file=_name(location))
    if isinstance(location, DatasetSplit):
        name, rows = str(location), _load_split(location, local_copy_hint)
    else:
        name = _resolve(location)
        rows = _load_with_datasets(name, location)
    if not rows:
        raise DataError("the data has no rows", file=_name(location))
    return name, rows[:max_rows]


def _name(location: Location) -> str | None:
    return None if location is None else str(location)


def _load_split(split: DatasetSplit, local_copy_hint: str) -> list[dict[str, Any]]:
    """The split's rows, from the HF cache or the hub (or the local folder)."""
    if split.is_local and not Path(split.dataset).expanduser().is_dir():
        raise DataError("dataset folder not found", file=str(split))
    if split.is_local and split.revision is not None:
        raise DataError("a local folder has no revisions: set its revision to null", file=str(split))
    try:
        if not split.is_local:  # cached in the usual HF cache, by revision
            return _load_dataset(split.dataset, split, cache_dir=None)
        # A folder gets a throw-away cache, as a file does: `datasets` keys a folder's cache so
        # that two folders of the same name and shape share it, and an edited file can be served stale.
        with tempfile.TemporaryDirectory() as cache_dir:
            return _load_dataset(str(Path(split.dataset).expanduser()), split, cache_dir=cache_dir)
    except Exception as error:  # offline, unknown id, split or subset: one line, no traceback
        raise DataError(_load_failure(split, error, local_copy_hint), file=str(split)) from None


def _load_dataset(path: str, split: DatasetSplit, *, cache_dir: str | None) -> list[dict[str, Any]]:
    import datasets

    dataset = datasets.load_dataset(
        path,
        split.subset,
        data_dir=split.data_dir,
        revision=split.revision,
        split=split.split,
        cache_dir=cache_dir,
        keep_in_memory=cache_dir is not None,
    )
    return dataset.to_list()


def _load_failure(split: DatasetSplit, error: Exception, local_copy_hint: str) -> str:
    reason = " ".join(str(error).split())[:300] or type(error).__name__
    if split.is_local:
        return f"could not load the dataset folder: {reason}"
    return f"could not load the dataset: {reason}; to read a local copy instead: {local_copy_hint}"


def _resolve(path: str | None) -> str:
    if path is None:
        raise DataError("this data source reads a file or a dataset, and neither was given")
    file = Path(path).expanduser()
    if file.is_dir():
        raise DataError(
            "is a folder, not a data file (a folder laid out as a dataset repository is data.dataset)",
            file=path,
        )
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
                yield _json_object(row, path, {"row": row_index})
            return
    for line_index, line in enumerate(text.splitlines()):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"malformed JSON: {error}", file=path, line=line_index + 1) from None
        yield _json_object(row, path, {"line": line_index + 1})


def _json_object(row: Any, path: str | None, where: dict[str, int]) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise DataError(f"expected a JSON object, got {describe(row)}", file=path, **where)
    return row


def _open_text(file: str, path: str | None) -> str:
    try:
        if file.endswith(".gz"):
            with gzip.open(file, "rt", encoding="utf-8") as handle:
                return handle.read()
        return Path(file).read_text(encoding="utf-8")
    except (OSError, EOFError, UnicodeDecodeError) as error:
        raise DataError(f"could not read the file: {error}", file=path) from error


def position_of_row(file: str, row: int) -> dict[str, int]:
    """Where record `row` (0-based) of `file` is, as a `DataError` names it: `{"line": n}`, the
    1-based line of a JSONL file (whose blank lines `datasets` skips), else `{"row": row}`."""
    if _extension(file) not in (".jsonl", ".jsonl.gz"):
        return {"row": row}
    records = -1
    for line_index, line in enumerate(_open_text(file, None).splitlines()):
        records += bool(line.strip())
        if records == row:
            return {"line": line_index + 1}
    return {"row": row}
