"""Files the project writes and later trusts: written whole or not at all, and checked by digest.

Every file is written under a temporary name in its own folder and renamed into place, so a kill
or a full disk never leaves a truncated file under a final name. A digest manifest (SHA-256 of
each file, JSON) is written beside what it covers, last, and checked before the thing is used.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dpo_exp.errors import STORAGE_ERRNOS, WriteError

TEMPORARY_MARK = ".partial"  # in the name of every temporary file or folder this module makes
CHUNK = 1 << 24


@contextlib.contextmanager
def writing(path: str | os.PathLike[str], *, needed: int | None = None) -> Iterator[None]:
    """Turn a full disk or an unwritable folder met while writing `path` into a WriteError naming it."""
    try:
        yield
    except WriteError:
        raise
    except OSError as error:
        if error.errno not in STORAGE_ERRNOS:
            raise
        raise WriteError(path, error, needed=needed) from error


def temporary_name(path: Path) -> str:
    """The prefix of temporaries for `path`: hidden, in the same folder, recognisably partial."""
    return f".{path.name}{TEMPORARY_MARK}."


def write_bytes_atomically(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write `data` to `path` through a temporary file and a rename: `path` is whole or absent."""
    with writing(path, needed=len(data)):
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=temporary_name(path))
        try:
            with os.fdopen(handle, "wb") as stream:
                stream.write(data)
            os.chmod(temporary, mode)  # mkstemp creates 0600
            os.replace(temporary, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(temporary)


def write_text_atomically(path: Path, text: str) -> None:
    write_bytes_atomically(path, text.encode("utf-8"))


def write_json_atomically(data: Any, path: Path) -> None:
    write_text_atomically(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def building_folder(final: Path) -> Iterator[Path]:
    """A hidden temporary folder beside `final`, renamed to `final` when the block ends without error.

    Whatever the block leaves unfinished is removed; a kill leaves only a hidden `.<name>.partial.*`
    folder, which `remove_partials` clears.
    """
    with writing(final):
        final.parent.mkdir(parents=True, exist_ok=True)
        building = Path(tempfile.mkdtemp(dir=final.parent, prefix=temporary_name(final)))
    try:
        with writing(final):
            yield building
            os.chmod(building, 0o755)  # mkdtemp creates 0700
            building.rename(final)
    finally:
        shutil.rmtree(building, ignore_errors=True)


def remove_partials(path: Path) -> list[Path]:
    """Remove the temporaries a killed writer of `path` left behind; return them.

    Call only while no other process can be writing `path` (under its lock).
    """
    removed = sorted(path.parent.glob(temporary_name(path) + "*"))
    for leftover in removed:
        remove_path(leftover)
    return removed


def remove_path(path: Path) -> None:
    """Remove a file or a folder, if there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


# -- digests -----------------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def files_under(path: Path) -> list[Path]:
    """`path` itself when it is a file, else every file below it, sorted."""
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file())


def digests_of(paths: list[Path], root: Path) -> dict[str, str]:
    """{path relative to `root`: SHA-256} of every file of `paths` (files or folders)."""
    return {str(file.relative_to(root)): sha256_file(file) for path in paths for file in files_under(path)}


def digest_problem(expected: dict[str, str], paths: list[Path], root: Path) -> str | None:
    """Why the files of `paths` do not match `expected` (missing, extra or changed), or None."""
    try:
        found = digests_of(paths, root)
    except OSError as error:
        return f"cannot be read ({error})"
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    changed = sorted(name for name in set(expected) & set(found) if expected[name] != found[name])
    for problem, names in (("missing", missing), ("not in its digest list", extra), ("changed", changed)):
        if names:
            return f"{problem}: {', '.join(names[:3])}{' ...' if len(names) > 3 else ''}"
    return None
