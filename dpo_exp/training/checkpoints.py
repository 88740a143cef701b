"""Checkpoints every N steps (policy, optimizer, scheduler, loop position, RNG), each with its digests.

Beside every checkpoint `stepNNNNNN.ckpt` (a file, or a folder of shards under FSDP) the run writes
`stepNNNNNN.ckpt.digests.json`, last: the SHA-256 of each of its files and the config of the run
that wrote it. A checkpoint is used only if its files match that list, and it loads without running
pickled code (weights-only; a sharded one is checked by `sharded.py` first).
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any
from weakref import proxy

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from dpo_exp.console import warn
from dpo_exp.errors import ConfigError
from dpo_exp.storage import (
    digest_problem,
    digests_of,
    files_under,
    remove_path,
    temporary_name,
    write_json_atomically,
    writing,
)
from dpo_exp.training.sharded import DISTRIBUTED_INDEX, ShardedCheckpointError, check_sharded_items

CHECKPOINT_DIR = "checkpoints"
DIGESTS_SUFFIX = ".digests.json"
# The rest of a sharded checkpoint's training state, which Lightning writes after the shards.
DISTRIBUTED_META = "meta.pt"


class DigestedCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint, writing each checkpoint's digest list after it and removing it with it."""

    def __init__(self, *args: Any, config: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config = config

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        """ModelCheckpoint's save, into a hidden partial name renamed into place, then the digest list.

        Lightning writes a checkpoint file by copying a temporary file into the final name, so a full
        disk or a kill would leave a truncated checkpoint there; a partial one is never under the final name.
        """
        final = Path(filepath)
        partial = final.with_name(temporary_name(final) + "save")  # the same name on every rank
        with writing(final, needed=previous_size(final.parent)):
            try:
                trainer.save_checkpoint(partial, self.save_weights_only)
                if trainer.is_global_zero:
                    remove_path(final)  # a checkpoint of this step left, without digests, by a killed run
                    os.replace(partial, final)
                    record = {"files": digests_of([final], final.parent), "config": self.config}
                    write_json_atomically(record, digests_file(final))
            finally:
                if trainer.is_global_zero:
                    remove_path(partial)
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.after_save_checkpoint(proxy(self))

    def save_now(self, trainer: L.Trainer) -> None:
        """This step's checkpoint, now, as the step schedule would save it (kept among keep_last)."""
        self._save_topk_checkpoint(trainer, self._monitor_candidates(trainer))

    def _remove_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        if trainer.is_global_zero:
            digests_file(Path(filepath)).unlink(missing_ok=True)  # first: a checkpoint without it is unused
        super()._remove_checkpoint(trainer, filepath)


def previous_size(folder: Path) -> int | None:
    """The size of the newest checkpoint in `folder`: about what the next one needs."""
    found = sorted(folder.glob("step*.ckpt"))
    if not found:
        return None
    return sum(file.stat().st_size for file in files_under(found[-1]))


def checkpoint_callback(
    run_dir: Path, every_n_steps: int, keep_last: int, config: dict[str, Any]
) -> ModelCheckpoint:
    """Step checkpoints, the `keep_last` most recent kept, each with its digests and `config`."""
    return DigestedCheckpoint(
        dirpath=run_dir / CHECKPOINT_DIR,
        filename="step{step:06d}",
        auto_insert_metric_name=False,
        every_n_train_steps=every_n_steps,
        save_top_k=keep_last,
        monitor="step",
        mode="max",
        save_on_train_epoch_end=False,
        config=config,
    )


def digests_file(checkpoint: Path) -> Path:
    return checkpoint.with_name(checkpoint.name + DIGESTS_SUFFIX)


def rng_state() -> dict[str, Any]:
    """Generator states as tensors and plain values, so a weights-only load can read them."""
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached_gaussian],
    }
    if torch.cuda.is_available():  # dropout and sampling on a GPU draw from its own generators
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():  # a GPU run resumed on the CPU has none to set
        torch.cuda.set_rng_state_all(state["cuda"])
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    name, keys, position, has_gauss, cached_gaussian = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached_gaussian))


def checkpoints_of(run_dir: Path) -> list[Path]:
    """The run folder's checkpoints, newest first."""
    return sorted((run_dir / CHECKPOINT_DIR).glob("step*.ckpt"), reverse=True)


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest checkpoint that checks: one cut short by a kill mid-write is passed over."""
    for checkpoint in checkpoints_of(run_dir):
        try:
            check_checkpoint(checkpoint)
        except ConfigError as error:
            warn(f"skipping {checkpoint}: {error}")
            continue
        return checkpoint
    return None


def is_distributed_checkpoint(path: Path) -> bool:
    return path.is_dir() and (path / DISTRIBUTED_INDEX).exists()


def checkpoint_config(path: Path) -> dict[str, Any]:
    """The config of the run that wrote `path`, from its digest list (call after `check_checkpoint`)."""
    return json.loads(digests_file(path).read_text())["config"]


def check_checkpoint(path: Path) -> None:
    """Refuse, naming the file, a checkpoint that does not match its digests or could run code on load."""
    check_digests(path)
    state_file = path
    if path.is_dir():
        if not is_distributed_checkpoint(path) or not (path / DISTRIBUTED_META).exists():
            raise ConfigError(f"resume: checkpoint folder {path} is incomplete (no {DISTRIBUTED_META})")
        try:
            check_sharded_items(path)
        except (ShardedCheckpointError, OSError) as error:
            raise ConfigError(f"resume: sharded checkpoint {path} refused: {error}") from None
        state_file = path / DISTRIBUTED_META
    try:
        checkpoint = torch.load(state_file, map_location="cpu", weights_only=True)
    except Exception as error:
        reason = f"{type(error).__name__}: {error}"
        raise ConfigError(f"resume: checkpoint {path} is corrupt or truncated ({reason})") from error
    # The tensors of a sharded checkpoint live in its shards, not in meta.pt.
    required = ("loops",) if path.is_dir() else ("state_dict", "loops")
    if not isinstance(checkpoint, dict) or any(key not in checkpoint for key in required):
        raise ConfigError(f"resume: {path} is not a training checkpoint (it has no state_dict or loops)")


def check_digests(path: Path) -> None:
    """The checkpoint's files equal those its digest list names, byte for byte."""
    record_file = digests_file(path)
    if not record_file.is_file():
        raise ConfigError(
            f"resume: checkpoint {path} has no digest list ({record_file.name}): it was cut short while "
            "saving, or not written by dpo_exp"
        )
    try:
        record = json.loads(record_file.read_text())
        expected, _ = dict(record["files"]), dict(record["config"])
    except (ValueError, KeyError, TypeError) as error:
        raise ConfigError(f"resume: {record_file} is not a digest list ({error})") from None
    problem = digest_problem(expected, [path], path.parent)
    if problem is not None:
        raise ConfigError(f"resume: checkpoint {path} does not match its digests ({problem})")
