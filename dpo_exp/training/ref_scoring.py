"""The reference log-prob cache, read before training or scored as training starts: on the device
the strategy has placed the model on, in the run's precision, each rank scoring its share.

Scored on the host before the Trainer exists, a GPU run's cache took the CPU's time for every
pair while the GPUs idled, in fp32 whatever the run's precision. Here the file is looked for when
the run is assembled (`open_cache`); if it is not there, `ReferenceScoring` scores it when the fit
starts, with the Trainer's own precision plugin, every rank taking every world-size-th example,
the shares gathered, and rank 0 writing the file. The data module holds the cache's tensors from
the start; they are filled in place before its loaders exist.

Rank 0 holds the file's lock from its look for the file until the file is written, so sweep
members that start together score it once. The other ranks never take the lock: while rank 0 holds
it no one else writes the file, so each rank finds what rank 0 found, and all of them score, or
none does.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from filelock import FileLock

from dpo_exp.console import is_main_process, stage, warn
from dpo_exp.data.collate import SplitLogps, UnpairedLogps
from dpo_exp.data.module import PreparedData
from dpo_exp.models.lora import is_lora, reference_mode
from dpo_exp.storage import remove_partials, writing
from dpo_exp.training.ref_cache import (
    SPLITS,
    CacheError,
    ReferenceCache,
    cache_key,
    cache_path,
    compute_split,
    fill,
    load_cache,
    placeholder,
    save_cache,
)


@dataclass
class OpenCache:
    """A run's reference cache: its file, the tensors the data module reads, and whether they are
    filled already (the file was there)."""

    key: dict
    path: Path
    sizes: dict[str, int]
    paired: bool
    cache: ReferenceCache
    found: bool
    lock: FileLock | None = None  # rank 0's, held until the file is written

    def release(self) -> None:
        if self.lock is not None and self.lock.is_locked:
            self.lock.release()


def open_cache(
    cfg: Any, policy: torch.nn.Module, tokenizer: Any, data: PreparedData, *, paired: bool
) -> OpenCache:
    """The run's cache, read and verified if its file is there (a damaged one is removed, with a
    message, to be scored again); else NaN tensors to be filled when training starts."""
    key = cache_key(cfg, policy, tokenizer, data)
    path = cache_path(cfg.reference.cache_dir, key)
    sizes = {"train": len(data.train.items), "validation": len(data.validation.items)}
    opened = OpenCache(key, path, sizes, paired, placeholder(sizes, paired=paired), found=False)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
    if is_main_process():
        opened.lock = FileLock(str(path) + ".lock")
        opened.lock.acquire()
        remove_partials(path)  # a writer killed mid-write; no other can be writing under the lock
    if path.exists():
        try:
            fill(opened.cache, load_cache(path, key, sizes, paired=paired))
            opened.found = True
        except CacheError as error:
            if is_main_process():
                warn(f"reference log-probs: {error}; recomputing")
                path.unlink()
    if opened.found:
        opened.release()
        stage("ref", f"reused reference log-probs {path}")
    return opened


class ReferenceScoring(L.Callback):
    """Fills an unfound cache when the fit starts: the reference on the module's device, cast and
    run under the Trainer's precision plugin, each rank scoring its share, rank 0 writing the file.

    `reference` is the reference model taken when the run was assembled (a copy of the initial
    policy, or `ref_path`'s), or None where the LoRA policy's own base is the reference.
    """

    def __init__(
        self,
        opened: OpenCache,
        data: PreparedData,
        reference: torch.nn.Module | None,
        options: dict[str, Any],
    ) -> None:
        self.opened = opened
        self.data = data
        self.reference = reference
        self.options = options

    def on_fit_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        opened = self.opened
        try:
            self.score(trainer, module)  # every rank ends with every rank's share
            if trainer.is_global_zero:
                save_cache(opened.path, opened.key, opened.cache)
                stage("ref", f"built reference log-probs {opened.path} ({trainer.world_size} ranks)")
        finally:
            opened.release()
            self.reference = None  # the scoring copy is not kept for training

    def on_exception(self, trainer: L.Trainer, module: L.LightningModule, exception: BaseException) -> None:
        self.opened.release()

    @torch.no_grad()
    def score(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        """This rank's share of both splits, gathered into the cache's tensors on every rank."""
        policy = module.policy
        if self.reference is None and not is_lora(policy):
            raise RuntimeError("reference log-probs to score, but no reference was kept for them")
        plugin = trainer.precision_plugin
        if self.reference is None:  # a LoRA policy's own base, adapter off, placed and cast already
            scorer, mode = policy, reference_mode(policy)
        else:
            scorer, mode = plugin.convert_module(self.reference).to(module.device), contextlib.nullcontext()
        rank, world = trainer.global_rank, trainer.world_size
        scored = {}
        with mode, plugin.forward_context():
            for split in SPLITS:
                items = getattr(self.data, split).items
                share = compute_split(scorer, items[rank::world], size=len(items), **self.options)
                scored[split] = gathered(trainer, share, module.device)
        fill(self.opened.cache, ReferenceCache(**scored))


def gathered(trainer: L.Trainer, share: SplitLogps | UnpairedLogps, device: torch.device) -> Any:
    """Every rank's share of a split in one: each example is scored by exactly one rank."""
    stacked = torch.stack([getattr(share, field.name) for field in dataclasses.fields(share)])  # (2, N)
    if trainer.world_size > 1:
        everyone = trainer.strategy.all_gather(stacked.to(device)).cpu()  # (world, 2, N)
        scored = everyone.isfinite().sum(0)
        if not bool((scored == 1).all()):
            raise RuntimeError("reference log-probs: the ranks' shares did not cover every example once")
        stacked = everyone.nan_to_num(0.0).sum(0)
    return type(share)(*stacked.unbind(0))


def scoring_options(cfg: Any, tokenizer: Any, *, paired: bool) -> dict[str, Any]:
    """How `compute_split` batches and scores, as the run's validation does."""
    return {
        "pad_id": tokenizer.pad_token_id,
        "batch_size": int(cfg.data.eval_batch_size),
        "paired": paired,
        "share_prompt": bool(cfg.speed.share_prompt),
        "logits_chunk": cfg.speed.logits_chunk,
    }
