"""What a run folder holds: its resolved config, a summary written only when it finishes, a failure
record, and a claim held while a process runs in it. Also the config identity that resume matches.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import platform
import shutil
import sys
import traceback
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout
from omegaconf import DictConfig, OmegaConf

from dpo_exp.console import is_main_process
from dpo_exp.errors import ConfigError
from dpo_exp.storage import write_text_atomically
from dpo_exp.training.metrics_file import METRICS, whole_lines

SUMMARY = "summary.json"  # present only in a finished run
FAILED = "failed.txt"  # present only in a run that stopped on an error
CONFIG = "config.yaml"  # the resolved config, written when the run starts
CLAIM = ".claim"  # locked by the process running in the folder, for as long as it runs
FINISHED_IN = "finished_in.txt"  # in an unfinished run that another run continued to its end: that folder
LIBRARIES = ("dpo_exp", "torch", "lightning", "transformers", "datasets", "hydra-core", "omegaconf")

# Keys that may differ between a run and its continuation, as they change nothing it computes:
# the resume switch itself, the budget (steps or epochs), where run folders and caches live (caches are keyed
# by their content), the run's label, what the console shows, and how long a collective waits.
RESUMABLE_KEYS = (
    "resume",
    "strategy.strategy.timeout",
    "trainer.max_steps",
    "trainer.max_epochs",
    "output_root",
    "cache_dir",
    "reference.cache_dir",
    "run_name",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
)


def resolved(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True)


def digest_of(data: Any) -> str:
    """A short, stable hash of JSON-serialisable data (key order independent)."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def config_hash(cfg: DictConfig) -> str:
    """A short, stable hash of the resolved config (key order independent)."""
    return digest_of(resolved(cfg))


def identity(config: dict[str, Any]) -> dict[str, Any]:
    """A resolved config less `RESUMABLE_KEYS`: what a continued run must share with the run it continues."""
    kept = json.loads(json.dumps(config, default=str))
    for key in RESUMABLE_KEYS:
        *parents, leaf = key.split(".")
        node = kept
        for parent in parents:
            node = node.get(parent) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    return kept


def differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two resolved configs, as `key: old -> new`."""
    if isinstance(old, dict) and isinstance(new, dict):
        found = []
        for key in sorted(set(old) | set(new), key=str):
            where = f"{prefix}.{key}" if prefix else str(key)
            found += differences(old.get(key, "<unset>"), new.get(key, "<unset>"), where)
        return found
    return [] if old == new else [f"{prefix}: {old!r} -> {new!r}"]


def write_resolved_config(cfg: DictConfig, run_dir: Path) -> None:
    """config.yaml, written by rank 0 only (every rank has the same config)."""
    if is_main_process():
        write_text_atomically(run_dir / CONFIG, OmegaConf.to_yaml(cfg, resolve=True))


def read_resolved_config(run_dir: Path) -> dict[str, Any] | None:
    """A run folder's resolved config, or None if it has none (or an unreadable one)."""
    try:
        config = OmegaConf.to_container(OmegaConf.load(run_dir / CONFIG), resolve=False)
    except Exception:  # noqa: BLE001 - absent, cut short or edited by hand: not a config to match
        return None
    return config if isinstance(config, dict) else None


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def write_failure(run_dir: Path, error: BaseException) -> None:
    """failed.txt: the error's message, then its traceback. Never raises: the original error matters more."""
    text = f"{type(error).__name__}: {error}\n"
    if error.__traceback__ is not None or error.__cause__ is not None:
        text += "\n" + "".join(traceback.format_exception(error))
    try:
        write_text_atomically(run_dir / FAILED, text)
    except OSError as failure:
        print(f"could not record the failure in {run_dir / FAILED}: {failure}", file=sys.stderr)


def failure_message(run_dir: Path) -> str:
    """The message part of a run folder's failed.txt (its traceback left out)."""
    return (run_dir / FAILED).read_text().split("\nTraceback (most recent call last):", 1)[0].strip()


def write_stopped(run_dir: Path, text: str) -> None:
    """failed.txt for a run stopped by a signal: one line (no traceback), removed when it resumes."""
    try:
        write_text_atomically(run_dir / FAILED, text + "\n")
    except OSError as failure:
        print(f"could not record the stop in {run_dir / FAILED}: {failure}", file=sys.stderr)


def keep_earlier_metrics(run_dir: Path) -> Path | None:
    """Before a resumed run writes metrics.csv afresh, keep the interrupted run's as metrics.partN.csv."""
    metrics = run_dir / METRICS
    if not metrics.exists():
        return None
    part = 1 + len(list(run_dir.glob("metrics.part*.csv")))
    return metrics.rename(run_dir / f"metrics.part{part}.csv")


def earlier_metrics(run_dir: Path, continued: Path, *, before_step: int) -> list[dict[str, str]]:
    """The rows a resumed run's metrics.csv starts with, so a run has one curve however often it
    stopped: the continued run's (in `continued`, the checkpoint's folder) logged before the
    checkpoint's step. In its own folder the run's failed.txt goes, and its file stays as
    metrics.partN.csv (rows after the checkpoint's step, trained again, are in it only)."""
    source = continued / METRICS
    if continued.resolve() == run_dir.resolve():
        (run_dir / FAILED).unlink(missing_ok=True)
        source = keep_earlier_metrics(run_dir)
    if source is None or not source.exists():
        return []
    text, _ = whole_lines(source.read_text())
    return [
        row for row in csv.DictReader(io.StringIO(text)) if row.get("step") and int(row["step"]) < before_step
    ]


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


# -- the claim on a run folder -----------------------------------------------------------------


def new_folder(base: Path) -> Path:
    """Make a folder that did not exist: `base`, else the first of `base-2`, `base-3`, ... free.

    `mkdir` fails if the name exists, even when two processes make it at the same instant, so two
    launches that name the same folder (the same config in the same second) each get their own.
    """
    base.parent.mkdir(parents=True, exist_ok=True)
    folder, number = base, 1
    while True:
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            number += 1
            folder = base.with_name(f"{base.name}-{number}")


def claim_run_dir(run_dir: Path) -> FileLock:
    """Lock `run_dir` for this process (release the returned lock when the run ends).

    Two launches never share a folder: one whose folder another live process holds is refused
    (only a folder given by `hydra.run.dir` can be named twice; a default one is `new_folder`).
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    claim = FileLock(str(run_dir / CLAIM), timeout=0)
    try:
        claim.acquire()
    except Timeout:
        raise ConfigError(
            f"run folder {run_dir} is in use by another process; nothing of this launch was written "
            "there: give it another folder (hydra.run.dir), or leave the default, a new folder per launch"
        ) from None
    return claim


def is_live(run_dir: Path) -> bool:
    """Whether a process is running in `run_dir` now (it holds the folder's claim)."""
    if not (run_dir / CLAIM).exists():
        return False
    probe = FileLock(str(run_dir / CLAIM), timeout=0)
    try:
        probe.acquire()
    except Timeout:
        return True
    probe.release()
    return False
