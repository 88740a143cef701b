"""What a run folder holds: its resolved config, and a summary written only when it finishes."""

from __future__ import annotations

import hashlib
import json
import os
import platform
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
