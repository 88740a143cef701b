"""Stage artefacts on disk under a content key of their settings, published atomically.

A stage's folder is `<root>/<stage>/<key>`, where the key hashes the settings that determine its
output. The folder is built under a temporary name and renamed into place, under a file lock, so
concurrent sweep members that ask for the same stage wait for one builder and then reuse its work.
A folder that exists is complete: nothing else ever has the final name.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

SETTINGS = "settings.json"  # the settings the key was made from, kept beside the artefacts


@dataclass(frozen=True)
class StageResult:
    path: Path
    reused: bool  # True when a previous run had built it


def stage_key(settings: dict[str, Any]) -> str:
    """A short, stable hash of JSON-serialisable settings (key order independent)."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cached_stage(
    root: Path, stage: str, settings: dict[str, Any], build: Callable[[Path], None]
) -> StageResult:
    """The folder of `stage` for `settings`, calling `build(folder)` only if no run has built it."""
    final = root / stage / stage_key(settings)
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.is_dir():
        return StageResult(final, reused=True)
    with FileLock(str(final) + ".lock"):
        if final.is_dir():  # built by another process while this one waited for the lock
            return StageResult(final, reused=True)
        building = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}."))
        try:
            build(building)
            (building / SETTINGS).write_text(json.dumps(settings, indent=2, sort_keys=True, default=str))
            building.rename(final)
        finally:
            shutil.rmtree(building, ignore_errors=True)
    return StageResult(final, reused=False)
