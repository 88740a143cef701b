"""Which checkpoint a run continues from: `resume` is null, `auto`, a checkpoint or a run folder.

A run continues only a run of the same config identity (its resolved config less the keys that
may change on resume, `run_files.RESUMABLE_KEYS`): the checkpoint's digest list records the config
of the run that wrote it. A finished run is never continued, a folder that holds another run is
never written into, and unfinished runs passed over are named with the reason.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities.warnings import PossibleUserWarning

from dpo_exp.console import is_main_process
from dpo_exp.errors import ConfigError
from dpo_exp.storage import write_text_atomically
from dpo_exp.training.checkpoints import (
    CHECKPOINT_DIR,
    check_checkpoint,
    checkpoint_config,
    checkpoints_of,
    digests_file,
    is_distributed_checkpoint,
    latest_checkpoint,
)
from dpo_exp.training.run_files import (
    CONFIG,
    FINISHED_IN,
    SUMMARY,
    differences,
    identity,
    is_live,
    read_resolved_config,
)
from dpo_exp.world import agreed, started_by_lightning

# The digest of the data a run trains on (its tokenised examples, per split), kept in its folder: a
# run continues only on the data it was trained on, whatever the files are named.
DATA_DIGEST = "data_digest.json"

# The checkpoint the launching process chose, for the processes it starts (DDP, FSDP): by then its
# own folder holds the run's config and the folder it continues may be marked, so they cannot choose again.
RESUME_ENV = "DPO_EXP_RESUME_FROM"


# Lightning warns that a loader without `state_dict` cannot resume mid-epoch; ours need not: the
# data module's GlobalBatchSampler starts a resumed epoch at the batch the checkpoint stopped before
# (`resume_at`), so a resumed run sees the batches an uninterrupted one does (tests/e2e/test_resume.py).
NOT_RESUMABLE_WARNING = (
    r"You're resuming from a checkpoint that ended before the epoch ended and your dataloader"
)


@contextlib.contextmanager
def exact_resume() -> Iterator[None]:
    """Lightning's "dataloader is not resumable" warning left out while a run resumes (see above)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=NOT_RESUMABLE_WARNING, category=PossibleUserWarning)
        yield


def step_of(checkpoint: Path) -> int:
    found = re.search(r"step(\d+)", checkpoint.name)
    return int(found.group(1)) if found else -1


def resume_checkpoint(resume: str | None, run_dir: Path, config: dict[str, Any]) -> Path | None:
    """The checkpoint this run (resolved `config`, writing into `run_dir`) continues from, or None.

    Refuses (ConfigError) what it cannot continue honestly; prints what it decided and why.
    """
    if started_by_lightning():
        chosen = os.environ.get(RESUME_ENV)
        return Path(chosen) if chosen else None
    chosen = agreed("resume", lambda: decide_resume(resume, run_dir, config))
    os.environ[RESUME_ENV] = chosen or ""  # for the ranks Lightning starts from this process
    return Path(chosen) if chosen else None


def decide_resume(resume: str | None, run_dir: Path, config: dict[str, Any]) -> str | None:
    """`resume_checkpoint`'s decision, taken once per run (on rank 0), as a path or None."""
    wanted = identity(config)
    own = check_own_folder(run_dir, resume, wanted)
    if resume is None:
        note_unfinished_runs(run_dir, wanted)
        checkpoint = None
    elif resume == "auto":
        checkpoint = own if own is not None else auto_checkpoint(run_dir, wanted)
    else:
        checkpoint = explicit_checkpoint(Path(resume), wanted)
    return None if checkpoint is None else str(checkpoint)


def refuse_finished_folder(run_dir: Path) -> None:
    """Refuse to run in a folder that holds a finished run (ConfigError)."""
    if (run_dir / SUMMARY).exists():
        raise ConfigError(
            f"run folder {run_dir} holds a finished run; a finished run is never resumed or written over"
        )


def check_own_folder(run_dir: Path, resume: str | None, wanted: dict[str, Any]) -> Path | None:
    """Refuse a folder that holds a finished run or another config's run; with `auto`, its own checkpoint."""
    refuse_finished_folder(run_dir)
    held = read_resolved_config(run_dir)
    if held is None:
        return None
    if resume is None:
        raise ConfigError(
            f"run folder {run_dir} already holds an unfinished run; resume=auto continues it "
            "(or give the run another folder)"
        )
    changed = differences(identity(held), wanted)
    if changed:
        raise ConfigError(
            f"resume: run folder {run_dir} holds a run of another config (differs in {describe(changed)}); "
            "resume it with its own config, or give this run another folder"
        )
    checkpoint = latest_checkpoint(run_dir) if resume == "auto" else None
    if checkpoint is not None:
        print(f"resume=auto: resuming from {checkpoint} (this folder's unfinished run)")
    return checkpoint


def describe(changed: list[str], limit: int = 4) -> str:
    return "; ".join(changed[:limit]) + (f"; and {len(changed) - limit} more" if len(changed) > limit else "")


def unfinished_siblings(run_dir: Path) -> list[Path]:
    """Other run folders of the same name that are neither finished, continued to the end, nor running."""
    if not run_dir.parent.is_dir():
        return []
    return [
        folder
        for folder in sorted(run_dir.parent.iterdir(), reverse=True)
        if folder != run_dir
        and (folder / CONFIG).exists()
        and not (folder / SUMMARY).exists()
        and not (folder / FINISHED_IN).exists()
        and not is_live(folder)
    ]


def auto_checkpoint(run_dir: Path, wanted: dict[str, Any], *, announce: bool = True) -> Path | None:
    """The newest checkpoint of an unfinished run of this config beside `run_dir`; others are named
    (and, with `announce`, the choice)."""
    candidates = []
    for folder in unfinished_siblings(run_dir):
        held = read_resolved_config(folder)
        changed = (
            differences(identity(held), wanted) if held is not None else ["its config.yaml is unreadable"]
        )
        if changed:
            print(
                f"resume=auto: not continuing {folder}, an unfinished run of another config "
                f"({describe(changed)})"
            )
            continue
        checkpoint = latest_checkpoint(folder)
        if checkpoint is None:
            print(f"resume=auto: not continuing {folder}: it has no usable checkpoint")
            continue
        candidates.append(checkpoint)
    if not candidates:
        if announce:
            print("resume=auto: no unfinished run of this config to continue; starting afresh")
        return None
    checkpoint = max(candidates, key=step_of)  # sorted newest folder first: max keeps the first of ties
    if announce:
        print(f"resume=auto: resuming from {checkpoint} (the unfinished run {checkpoint.parent.parent})")
    return checkpoint


def folder_to_continue(run_dir: Path, config: dict[str, Any]) -> Path | None:
    """With resume=auto, the folder of the unfinished run of this config that `run_dir`, a new
    folder, would continue (its newest checkpoint's), or None: the run continues there, keeping
    one folder and one curve however often it stopped."""
    if read_resolved_config(run_dir) is not None:
        return None  # a folder that holds a run continues its own
    checkpoint = auto_checkpoint(run_dir, identity(config), announce=False)
    return None if checkpoint is None else checkpoint.parent.parent


def note_unfinished_runs(run_dir: Path, wanted: dict[str, Any]) -> None:
    """Say so when a killed run of this very config could be continued (without checking its files)."""
    for folder in unfinished_siblings(run_dir):
        held = read_resolved_config(folder)
        if held is None or differences(identity(held), wanted):
            continue
        digested = [c for c in checkpoints_of(folder) if digests_file(c).exists()]
        if digested:
            print(
                f"note: {folder} is an unfinished run of this config (checkpoint at step "
                f"{step_of(digested[0])}); resume=auto continues it"
            )


def locate_checkpoint(path: Path) -> Path:
    """The checkpoint `resume=<path>` names, checked: a checkpoint, or an unfinished run folder's newest."""
    if path.is_dir() and not is_distributed_checkpoint(path) and not path.name.endswith(".ckpt"):
        if (path / SUMMARY).exists():
            raise ConfigError(f"resume: {path} is a finished run; a finished run is never resumed")
        checkpoint = latest_checkpoint(path)
        if checkpoint is None:
            raise ConfigError(f"resume: no usable checkpoint in {path / CHECKPOINT_DIR}")
        return checkpoint
    if not path.exists():
        raise ConfigError(f"resume: checkpoint not found: {path}")
    check_checkpoint(path)
    return path


def explicit_checkpoint(path: Path, wanted: dict[str, Any]) -> Path:
    checkpoint = locate_checkpoint(path)
    changed = differences(identity(checkpoint_config(checkpoint)), wanted)
    if changed:
        raise ConfigError(
            f"resume: {checkpoint} was written by a run of another config (differs in {describe(changed)}); "
            "resume continues a run as it was configured (to train on from its weights, export it and "
            "start a new run with model.path)"
        )
    print(f"resuming from {checkpoint}")
    return checkpoint


def write_data_digest(run_dir: Path, digest: dict[str, str]) -> None:
    """Record the digest of the run's data (rank 0: every rank reads the same data)."""
    if is_main_process():
        write_text_atomically(run_dir / DATA_DIGEST, json.dumps(digest, indent=1, sort_keys=True) + "\n")


def check_resumed_data(checkpoint: Path, digest: dict[str, str]) -> None:
    """Refuse to continue from `checkpoint` on data other than its run's: same config, other
    content (a file changed under its name). A run that recorded no digest is not checked."""
    run = next((folder for folder in checkpoint.parents if (folder / CONFIG).exists()), None)
    try:
        held = json.loads((run / DATA_DIGEST).read_text()) if run is not None else None
    except (OSError, ValueError):
        held = None
    if not isinstance(held, dict):
        return
    changed = [split for split, value in digest.items() if split in held and held[split] != value]
    if changed:
        raise ConfigError(
            f"resume: the {' and '.join(changed)} data differ from those {run} was trained on (the same "
            "config, other content); a run continues only on its own data: restore them, or start a "
            "new run (resume=null)"
        )
