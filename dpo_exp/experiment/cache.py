"""Stage artefacts on disk under a content key of their settings, published atomically, checked on reuse.

A stage's folder is `<root>/<stage>/<key>`, where the key hashes the settings that determine its
output. The folder is built under a hidden temporary name and renamed into place, under a file
lock, so concurrent sweep members that ask for the same stage wait for one builder and then reuse
its work. Its last file, `digests.json`, holds the SHA-256 of every other file; a folder whose
files do not match it (or that lacks it) is rebuilt, with a one-line message, never used. Hidden
half-built folders that a killed builder left behind are removed by the next builder.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from dpo_exp.storage import building_folder, digest_problem, digests_of, remove_path, writing

SETTINGS = "settings.json"  # the settings the key was made from, kept beside the artefacts
DIGESTS = "digests.json"  # SHA-256 of every other file of the folder, written last


@dataclass(frozen=True)
class StageResult:
    path: Path
    reused: bool  # True when a previous run had built it


def stage_key(settings: dict[str, Any]) -> str:
    """A short, stable hash of JSON-serialisable settings (key order independent)."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def stage_problem(folder: Path) -> str | None:
    """Why a stage folder cannot be trusted (no digest list, files that do not match it), or None."""
    try:
        expected = json.loads((folder / DIGESTS).read_text())
    except (OSError, ValueError):
        return f"it has no readable {DIGESTS}"
    contents = [path for path in folder.iterdir() if path.name != DIGESTS]
    return digest_problem(expected, contents, folder)


def cached_stage(
    root: Path, stage: str, settings: dict[str, Any], build: Callable[[Path], None]
) -> StageResult:
    """The folder of `stage` for `settings`, calling `build(folder)` only if no run has built it."""
    final = root / stage / stage_key(settings)
    with writing(final.parent):
        final.parent.mkdir(parents=True, exist_ok=True)
    if final.is_dir() and stage_problem(final) is None:
        return StageResult(final, reused=True)
    with FileLock(str(final) + ".lock"):
        for leftover in final.parent.glob(f".{final.name}.*"):  # half-built by a killed builder
            remove_path(leftover)  # (no other process builds this stage while the lock is held)
        if final.is_dir():  # built by another process while this one waited, or failing its digests
            problem = stage_problem(final)
            if problem is None:
                return StageResult(final, reused=True)
            print(f"[cache] {final} cannot be trusted ({problem}); rebuilding it")
            shutil.rmtree(final)
        with building_folder(final) as building:
            build(building)
            (building / SETTINGS).write_text(json.dumps(settings, indent=2, sort_keys=True, default=str))
            digests = digests_of(sorted(building.iterdir()), building)
            (building / DIGESTS).write_text(json.dumps(digests, indent=2, sort_keys=True))
    return StageResult(final, reused=False)
