"""What a run folder holds: its resolved config, and a summary written only when it finishes."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

SUMMARY = "summary.json"  # present only in a finished run
FAILED = "failed.txt"  # present only in a run that stopped on an error
LIBRARIES = ("dpo_exp", "torch", "lightning", "transformers", "datasets", "hydra-core", "omegaconf")


def config_hash(cfg: DictConfig) -> str:
    """A short, stable hash of the resolved config (key order independent)."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    return hashlib.sha256(json.dumps(resolved, sort_keys=True).encode()).hexdigest()[:16]


def write_resolved_config(cfg: DictConfig, run_dir: Path) -> None:
    OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def write_json_atomically(data: dict[str, Any], path: Path) -> None:
    """Write to a temporary file in the same folder, then rename: readers never see half a file."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(handle, "w") as stream:
        json.dump(data, stream, indent=2, sort_keys=True)
        stream.write("\n")
    os.chmod(temporary, 0o644)  # mkstemp creates 0600; a summary is for everyone to read
    os.replace(temporary, path)


def write_failure(run_dir: Path, error: BaseException) -> None:
    (run_dir / FAILED).write_text(f"{type(error).__name__}: {error}\n")


def keep_earlier_metrics(run_dir: Path) -> None:
    """Before a resumed run writes metrics.csv afresh, keep the interrupted run's as metrics.partN.csv."""
    metrics = run_dir / "metrics.csv"
    if metrics.exists():
        part = 1 + len(list(run_dir.glob("metrics.part*.csv")))
        metrics.rename(run_dir / f"metrics.part{part}.csv")


def discard_unused_folder(run_dir: Path, root: Path) -> bool:
    """Remove a run folder that holds nothing but Hydra's record of the command (`.hydra/`, the log)
    and the folders above it that are left empty, up to `root`; True if it was removed.

    For commands that train nothing (a data report) and runs the config checks refused.
    """
    run_dir, root = run_dir.resolve(), root.resolve()
    if not run_dir.is_dir() or any(p.name != ".hydra" and p.suffix != ".log" for p in run_dir.iterdir()):
        return False
    shutil.rmtree(run_dir)
    for parent in run_dir.parents:
        if parent == root or not parent.is_relative_to(root) or any(parent.iterdir()):
            break
        parent.rmdir()
    return True
