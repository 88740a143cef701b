"""Errors the user can cause and fix, shared by every layer: the entry prints them as one message."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path


class UserError(Exception):
    """An error the user caused and can fix: the entry prints its message, not a traceback."""


class ConfigError(UserError, ValueError):
    """A config value that cannot work, named by its dotted key."""


class DataError(UserError, ValueError):
    """Bad input data, located by file (or dataset), field, and either `line` (1-based, as editors
    count a JSONL file's lines, blank ones included) or `row` (0-based, as `dataset[row]` indexes
    a table or a JSON list)."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        row: int | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.file, self.row, self.line, self.field = file, row, line, field
        where = ", ".join(
            part
            for part in (
                file,
                f"line {line}" if line is not None else None,
                f"row {row}" if row is not None and line is None else None,
                f"field '{field}'" if field is not None else None,
            )
            if part
        )
        super().__init__(f"{where}: {message}" if where else message)


# What a full disk, a quota, a folder one may not write to, or a file where a folder should be raise.
STORAGE_ERRNOS = (
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EROFS,
    errno.EACCES,
    errno.EPERM,
    errno.EFBIG,
    errno.ENOTDIR,
)


class WriteError(UserError, OSError):
    """A file or folder that could not be written: its path, the reason, the free space there."""

    def __init__(self, path: str | os.PathLike[str], error: OSError, *, needed: int | None = None) -> None:
        self.path, self.needed = Path(path), needed
        super().__init__(error.errno, error.strerror or str(error), str(path))

    def __str__(self) -> str:
        message = f"cannot write {self.path}: {self.strerror}"
        if self.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            free = free_bytes(self.path)
            if free is not None:
                message += f"; {format_bytes(free)} free there"
            if self.needed is not None:
                message += f", about {format_bytes(self.needed)} needed"
        if self.errno in (errno.ENOTDIR, errno.EEXIST):
            blocker = file_in_the_way(self.path)
            if blocker is not None:
                message += f"; {blocker} is a file, not a folder"
        return message


def storage_error(error: BaseException, path: str | os.PathLike[str] | None) -> WriteError | None:
    """`error` as a WriteError naming the file it names, else `path`, when it is about storage."""
    if isinstance(error, WriteError):
        return error
    if not isinstance(error, OSError) or error.errno not in STORAGE_ERRNOS:
        return None
    where = error.filename if error.filename is not None else path
    return None if where is None else WriteError(where, error)


def file_in_the_way(path: Path) -> Path | None:
    """The nearest of `path` and its ancestors that exists and is not a folder, if any: what stops
    a folder being made at `path` (the system's message, "Not a directory", does not name it)."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return None if candidate.is_dir() else candidate
    return None


def free_bytes(path: Path) -> int | None:
    """Free bytes on the file system holding `path` (its nearest existing ancestor)."""
    for folder in (path, *path.parents):
        if folder.exists():
            try:
                return shutil.disk_usage(folder).free
            except OSError:
                return None
    return None


def format_bytes(count: int) -> str:
    size = float(count)
    for unit in ("B", "KB", "MB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"
