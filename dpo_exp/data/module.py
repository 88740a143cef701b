"""From a data config to tokenised train/validation splits and a Lightning DataModule."""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader

from dpo_exp.console import detail, stage, warn
from dpo_exp.data.collate import (
    IndexedItem,
    PairCollator,
    SharedPromptCollator,
    SplitLogps,
    UnpairedCollator,
    UnpairedLogps,
    WithReferenceLogps,
)
from dpo_exp.data.demonstrations import DEMONSTRATIONS
from dpo_exp.data.records import DataError, PreferencePair, Record
from dpo_exp.data.report import (
    DataReport,
    build_report,
    check_not_empty,
    count_overlap,
    format_report,
    truncation_warning,
)
from dpo_exp.data.sampling import GlobalBatchSampler, row_length
from dpo_exp.data.sources import GENERATED, LoadedRecords, load_source, to_unpaired
from dpo_exp.data.tokenize import tokenize_records
from dpo_exp.rows import DatasetSplit, Location


def data_label(data_cfg: Any) -> str:
    """The data group's name; for your own data (data=pairs, unpaired, demonstrations), the file's
    or dataset's name too."""
    name = str(data_cfg.name)
    path = data_cfg.get("train_path") or data_cfg.get("dataset")
    if name == data_cfg.get("source") and name in ("pairs", "unpaired", DEMONSTRATIONS) and path:
        name = f"{name}-{Path(str(path)).name.split('.')[0]}"
    return name


def split_locations(data_cfg: Any) -> tuple[Location, Location]:
    """Where the train and validation records are read: local files (`train_path`, which wins),
    else the dataset's splits; None for validation cut from train, or a source that reads nothing."""
    if data_cfg.get("train_path"):
        return str(data_cfg.train_path), data_cfg.get("validation_path")
    if not data_cfg.get("dataset"):
        return None, None
    parts = {key: data_cfg.get(key) for key in ("revision", "subset", "data_dir")}
    train = DatasetSplit(str(data_cfg.dataset), str(data_cfg.train_split), **parts)
    validation_split = data_cfg.get("validation_split")
    validation = (
        DatasetSplit(str(data_cfg.dataset), str(validation_split), **parts) if validation_split else None
    )
    return train, validation


@dataclass
class PreparedSplit:
    items: list[IndexedItem]
    report: DataReport


@dataclass
class PreparedData:
    train: PreparedSplit
    validation: PreparedSplit
    # What a run says about its data at normal verbosity: how validation was made (`notes`), and
    # what may surprise (`warnings`: a capped val_size, validation rows that are training rows).
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def read_splits(data_cfg: Any) -> tuple[LoadedRecords, LoadedRecords]:
    """Train and validation records: from their own files or dataset splits, or validation cut
    from train (`val_size` rows, drawn with `split_seed`)."""
    options = dict(data_cfg.get("options") or {})
    train_location, validation_location = split_locations(data_cfg)
    train = load_source(data_cfg.source, train_location, **options)
    if validation_location is not None:
        return train, load_source(data_cfg.source, validation_location, **options)
    kept, held_out = cut_validation(train.records, data_cfg)
    where = f"{train.where} (validation split)"
    return replace(train, records=kept), LoadedRecords(held_out, train.format, where)


def cut_validation(train: list[Record], data_cfg: Any) -> tuple[list[Record], list[Record]]:
    """(train less `val_size` rows, those rows), drawn with `split_seed`, at most half of train."""
    order = list(range(len(train)))
    random.Random(data_cfg.split_seed).shuffle(order)
    val_size = min(int(data_cfg.val_size), len(train) // 2)
    held_out = set(order[:val_size])
    return (
        [r for i, r in enumerate(train) if i not in held_out],
        [r for i, r in enumerate(train) if i in held_out],
    )


def prepare_split(loaded: LoadedRecords, tokenizer: Any, data_cfg: Any, *, paired: bool) -> PreparedSplit:
    """Tokenise and filter one split; paired records become unpaired for unpaired losses."""
    records = loaded.records
    if not paired and records and isinstance(records[0], PreferencePair):
        records = to_unpaired(records)
    kept, dropped = tokenize_records(
        records, tokenizer, max_length=data_cfg.max_length, max_prompt_length=data_cfg.max_prompt_length
    )
    check_not_empty(kept, dropped, loaded.where)
    report = build_report(len(records), kept, dropped, source=loaded.where, row_format=loaded.format)
    return PreparedSplit([IndexedItem(i, record) for i, record in enumerate(kept)], report)


def prepare_data(data_cfg: Any, tokenizer: Any, *, paired: bool) -> PreparedData:
    train, validation = read_splits(data_cfg)
    prepared = PreparedData(
        train=prepare_split(train, tokenizer, data_cfg, paired=paired),
        validation=prepare_split(validation, tokenizer, data_cfg, paired=paired),
    )
    records = [[item.record for item in split.items] for split in (prepared.train, prepared.validation)]
    overlap = count_overlap(*records, validation.where)
    prepared.validation.report.overlap_with_train = overlap
    if split_locations(data_cfg)[1] is None:
        cut, requested = len(validation.records), int(data_cfg.val_size)
        if data_cfg.source not in GENERATED:
            prepared.notes.append(
                f"validation: {cut} rows cut from the training data ({train.where}), drawn with "
                f"data.split_seed={data_cfg.split_seed}; training keeps {len(train.records)}"
            )
        if cut < requested:
            prepared.warnings.append(
                f"data.val_size={requested}: {cut} validation rows used, at most half of the "
                f"{len(train.records) + cut} rows read (lower data.val_size, or give a validation file)"
            )
    if overlap:
        prepared.warnings.append(
            f"validation data: {overlap} of {prepared.validation.report.rows_kept} rows are identical to a "
            "training row: their figures measure training data"
        )
    return prepared


def announce_data(data: PreparedData, name: str) -> None:
    """Each split's report (at verbose), and what a run says of its data: truncation, notes, warnings."""
    for split, report in (("train", data.train.report), ("validation", data.validation.report)):
        title = f"{split} data ({name})"
        detail(format_report(report, title))
        if (warning := truncation_warning(report, title)) is not None:
            warn(warning)
    for note in data.notes:
        stage("data", note)
    for warning in data.warnings:
        warn(warning)


def evaluated_location(data_cfg: Any) -> Location:
    """The one set `dpo-exp evaluate` reads whole: `validation_path`, else the dataset's
    `validation_split`; None when the config names neither."""
    if data_cfg.get("validation_path"):
        return str(data_cfg.validation_path)
    if data_cfg.get("dataset") and data_cfg.get("validation_split"):
        parts = {key: data_cfg.get(key) for key in ("revision", "subset", "data_dir")}
        return DatasetSplit(str(data_cfg.dataset), str(data_cfg.validation_split), **parts)
    return None


def prepare_evaluated(data_cfg: Any, tokenizer: Any, *, paired: bool) -> PreparedData:
    """The set `evaluated_location` names, tokenised and truncated as a run's validation split is.
    Nothing is trained, so no training rows are read: both splits of the result are this set."""
    location = evaluated_location(data_cfg)
    if location is None:
        raise DataError("data.validation_path: no set to evaluate is named")
    loaded = load_source(data_cfg.source, location, **dict(data_cfg.get("options") or {}))
    split = prepare_split(loaded, tokenizer, data_cfg, paired=paired)
    return PreparedData(train=split, validation=split)


def split_collator(
    items: list[IndexedItem],
    pad_id: int,
    *,
    paired: bool,
    share_prompt: bool = False,
    pack: bool = False,
    mismatched_rows: bool = True,
) -> PairCollator | SharedPromptCollator | UnpairedCollator:
    """The collator of one split: pairs (one or two rows each) or unpaired examples (with their
    mismatched rows where the loss estimates a reference point from them)."""
    if not paired:
        return UnpairedCollator.for_split(pad_id, items, mismatched_rows=mismatched_rows)
    return SharedPromptCollator(pad_id, pack=pack) if share_prompt else PairCollator(pad_id)


class PreferenceDataModule(L.LightningDataModule):
    """Serves prepared splits; the training order is shuffled from the run's seed.

    Training batches come from `GlobalBatchSampler`: the same global batches whatever the number
    of processes, shuffled from the seed, of similar lengths with `group_by_length`. Validation is
    split across processes without repeats. `ref_logps` ({"train": ..., "validation": ...}) adds
    cached reference log-probs. With `share_prompt`, pairs are collated as prompt ‖ chosen ‖
    rejected rows (`SharedPromptCollator`), with `pack` several to a row; the examples and their
    order do not change.
    `mismatched_rows=False` leaves out unpaired batches' KL rows (`UnpairedCollator`).
    """

    def __init__(
        self,
        data: PreparedData,
        *,
        paired: bool,
        pad_id: int,
        batch_size: int,
        eval_batch_size: int,
        seed: int,
        shuffle: bool = True,
        group_by_length: bool = False,
        ref_logps: dict[str, SplitLogps | UnpairedLogps] | None = None,
        share_prompt: bool = False,
        pack: bool = False,
        mismatched_rows: bool = True,
    ) -> None:
        super().__init__()
        self.data = data
        self.pad_id = pad_id
        self.share_prompt = share_prompt and paired
        options = {
            "paired": paired,
            "share_prompt": share_prompt,
            "pack": pack,
            "mismatched_rows": mismatched_rows,
        }
        self.train_collate = split_collator(data.train.items, pad_id, **options)
        self.val_collate = split_collator(data.validation.items, pad_id, **options)
        if ref_logps is not None:
            self.train_collate = WithReferenceLogps(self.train_collate, ref_logps["train"])
            self.val_collate = WithReferenceLogps(self.val_collate, ref_logps["validation"])
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.group_by_length = group_by_length

    def _world(self) -> tuple[int, int]:
        """(world size, global rank); (1, 0) before a trainer is attached."""
        if self.trainer is None:
            return 1, 0
        return self.trainer.world_size, self.trainer.global_rank

    def train_dataloader(self) -> DataLoader:
        items = self.data.train.items
        world_size, rank = self._world()
        sampler = GlobalBatchSampler(
            [row_length(item) for item in items],
            self.batch_size,
            seed=self.seed,
            shuffle=self.shuffle,
            group_by_length=self.group_by_length,
            world_size=world_size,
            rank=rank,
        )
        if len(sampler) == 0:  # else Lightning trains 0 steps and the untrained model looks finished
            raise DataError(
                f"{len(items)} training examples, fewer than one batch of {self.batch_size * world_size} "
                f"(data.batch_size {self.batch_size} x {world_size} processes): nothing would train; "
                "lower data.batch_size or give more data"
            )
        if self.trainer is not None and self.trainer.global_step:
            # Resumed from a checkpoint: Lightning restored the step before asking for data.
            batches_done = self.trainer.global_step * self.trainer.accumulate_grad_batches
            sampler.resume_at(self.trainer.current_epoch, batches_done % len(sampler))
        return DataLoader(items, batch_sampler=sampler, collate_fn=self.train_collate)

    def val_dataloader(self) -> DataLoader:
        world_size, rank = self._world()
        items = self.data.validation.items
        sampler = UnrepeatedDistributedSampler(items, num_replicas=world_size, rank=rank, shuffle=False)
        return DataLoader(
            items, batch_size=self.eval_batch_size, sampler=sampler, collate_fn=self.val_collate
        )
