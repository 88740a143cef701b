"""Checkpoints every N steps (policy, optimizer, scheduler, loop position, RNG) and finding one to resume."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from dpo_exp.console import warn
from dpo_exp.errors import ConfigError
from dpo_exp.training.run_files import SUMMARY

CHECKPOINT_DIR = "checkpoints"


def checkpoint_callback(run_dir: Path, every_n_steps: int, keep_last: int) -> ModelCheckpoint:
    """Lightning's ModelCheckpoint keeping the `keep_last` most recent step checkpoints."""
    return ModelCheckpoint(
        dirpath=run_dir / CHECKPOINT_DIR,
        filename="step{step:06d}",
        auto_insert_metric_name=False,
        every_n_train_steps=every_n_steps,
        save_top_k=keep_last,
        monitor="step",
        mode="max",
        save_on_train_epoch_end=False,
    )


def rng_state() -> dict[str, Any]:
    """Generator states as tensors and plain values, so a weights-only load can read them."""
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached_gaussian],
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    name, keys, position, has_gauss, cached_gaussian = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached_gaussian))


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest checkpoint that loads: one cut short by a kill mid-write is passed over."""
    for checkpoint in sorted((run_dir / CHECKPOINT_DIR).glob("step*.ckpt"), reverse=True):
        try:
            check_checkpoint(checkpoint)
        except ConfigError as error:
            warn(f"skipping {checkpoint}: {error}")
            continue
        return checkpoint
    return None


def find_resume_checkpoint(resume: str | None, run_dir: Path) -> Path | None:
    """The checkpoint to continue from: `resume` is null, `auto`, a checkpoint or a run folder.

    `auto` takes this run folder's newest checkpoint, else that of the newest unfinished run of
    the same name beside it (same config, earlier start), else starts afresh.
    """
    if resume is None:
        return None
    if resume == "auto":
        candidates = [run_dir] + sorted(
            (d for d in run_dir.parent.iterdir() if d != run_dir and not (d / SUMMARY).exists()), reverse=True
        )
        found = (latest_checkpoint(folder) for folder in candidates)
        return next((checkpoint for checkpoint in found if checkpoint), None)
    path = Path(resume)
    if path.is_dir() and not is_distributed_checkpoint(path):
        checkpoint = latest_checkpoint(path)
        if checkpoint is None:
            raise ConfigError(f"resume: no checkpoint in {path / CHECKPOINT_DIR}")
        return checkpoint
    if not path.exists():
        raise ConfigError(f"resume: checkpoint not found: {path}")
    return path


# A sharded (FSDP) checkpoint is a folder: tensor shards indexed by `.metadata`, and the rest of
# the training state in `meta.pt`, which Lightning writes last.
DISTRIBUTED_INDEX = ".metadata"
DISTRIBUTED_META = "meta.pt"


def is_distributed_checkpoint(path: Path) -> bool:
    return path.is_dir() and (path / DISTRIBUTED_INDEX).exists()


def check_checkpoint(path: Path) -> None:
    """Refuse a truncated or corrupt checkpoint clearly; loads tensors only, never pickled code."""
    state_file = path
    if path.is_dir():
        if not is_distributed_checkpoint(path) or not (path / DISTRIBUTED_META).exists():
            raise ConfigError(f"resume: checkpoint folder {path} is incomplete (no {DISTRIBUTED_META})")
        state_file = path / DISTRIBUTED_META
    try:
        checkpoint = torch.load(state_file, map_location="cpu", weights_only=True)
    except Exception as error:
        reason = f"{type(error).__name__}: {error}"
        raise ConfigError(f"resume: checkpoint {path} is corrupt or truncated ({reason})") from error
    # The tensors of a sharded checkpoint live in its shards, not in meta.pt.
    required = ("loops",) if path.is_dir() else ("state_dict", "loops")
    if any(key not in checkpoint for key in required):
        raise ConfigError(f"resume: {path} is not a training checkpoint (it has no state_dict or loops)")
