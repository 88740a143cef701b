"""Training batches drawn as global batches, so the data order never depends on the process count."""

from __future__ import annotations

import random
from collections.abc import Iterator

from torch.utils.data import Sampler

from dpo_exp.data.collate import IndexedItem

GROUP_BATCHES = 64  # global batches per length-sorted group: more means less padding, less randomness


def row_length(item: IndexedItem) -> int:
    """Width of the longest row the example puts in a batch (prompt + its longest completion)."""
    record = item.record
    completions = (
        (record.chosen_ids, record.rejected_ids)
        if hasattr(record, "chosen_ids")
        else (record.completion_ids,)
    )
    return len(record.prompt_ids) + max(len(ids) for ids in completions)


class EpochClock:
    """The epoch a batch sampler draws. Lightning calls `set_epoch` on `batch_sampler.sampler`."""

    def __init__(self) -> None:
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch


class GlobalBatchSampler(Sampler[list[int]]):
    """Global batches of `batch_size × world_size` examples; each process takes its contiguous share.

    The global batches depend on the seed and the epoch only, so N processes with batch size B see
    the same examples at every step as one process with batch size N·B. With `shuffle` the order
    is a seeded permutation; with `group_by_length` each run of `GROUP_BATCHES` global batches is
    sorted by length before it is cut, so rows of similar length share a batch and little of it is
    padding. Incomplete global batches are dropped.
    """

    def __init__(
        self,
        lengths: list[int],
        batch_size: int,
        *,
        seed: int,
        shuffle: bool = True,
        group_by_length: bool = False,
        world_size: int = 1,
        rank: int = 0,
    ) -> None:
        self.lengths = lengths
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.group_by_length = group_by_length
        self.world_size = world_size
        self.rank = rank
        self.sampler = EpochClock()
        self.resume_epoch, self.resume_batch = 0, 0  # set on resume: where training stopped

    def resume_at(self, epoch: int, batch: int) -> None:
        """Continue mid-epoch: passes over `epoch` start at `batch`; other epochs start at 0.

        Lightning may start iterating an epoch more than once (a prefetch, then the loop), so
        the skip belongs to the epoch, not to the first iteration.
        """
        self.set_epoch(epoch)
        self.resume_epoch, self.resume_batch = epoch, batch

    @property
    def epoch(self) -> int:
        return self.sampler.epoch

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def global_batches(self, epoch: int) -> list[list[int]]:
        rng = random.Random(f"{self.seed}:{epoch}")
        order = list(range(len(self.lengths)))
        if self.shuffle:
            rng.shuffle(order)
        global_size = self.batch_size * self.world_size
        if self.group_by_length:
            group_size = global_size * GROUP_BATCHES
            groups = [order[start : start + group_size] for start in range(0, len(order), group_size)]
            order = [i for group in groups for i in sorted(group, key=self.lengths.__getitem__, reverse=True)]
        batches = [order[start : start + global_size] for start in range(0, len(order), global_size)]
        batches = [batch for batch in batches if len(batch) == global_size]
        if self.shuffle and self.group_by_length:
            rng.shuffle(batches)  # sorted groups would otherwise run from long to short
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        share = slice(self.rank * self.batch_size, (self.rank + 1) * self.batch_size)
        start = self.resume_batch if self.epoch == self.resume_epoch else 0
        for batch in self.global_batches(self.epoch)[start:]:
            yield batch[share]

    def __len__(self) -> int:
        return len(self.lengths) // (self.batch_size * self.world_size)
