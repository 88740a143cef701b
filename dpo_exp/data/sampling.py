"""Length-grouped batches: random batches whose rows have similar lengths, so little is padding."""

from __future__ import annotations

import random
from collections.abc import Iterator

from torch.utils.data import Sampler

from dpo_exp.data.collate import IndexedItem

GROUP_BATCHES = 64  # batches per sorted group: more means less padding, less randomness


def row_length(item: IndexedItem) -> int:
    """Width of the longest row the example puts in a batch (prompt + its longest completion)."""
    record = item.record
    completions = (
        (record.chosen_ids, record.rejected_ids)
        if hasattr(record, "chosen_ids")
        else (record.completion_ids,)
    )
    return len(record.prompt_ids) + max(len(ids) for ids in completions)


class LengthGroupedBatchSampler(Sampler[list[int]]):
    """Shuffle, sort each group of `GROUP_BATCHES` batches by length, cut into batches, shuffle batches.

    Each epoch draws a new order from `seed` and the epoch number, so a run is reproducible.
    Every example appears once per epoch; with `drop_last` the one short batch is left out.
    """

    def __init__(self, lengths: list[int], batch_size: int, *, seed: int, drop_last: bool = True) -> None:
        self.lengths = lengths
        self.batch_size = batch_size
        self.seed = seed
        self.drop_last = drop_last
        self.epoch = 0

    def batches(self, epoch: int) -> list[list[int]]:
        rng = random.Random(f"{self.seed}:{epoch}")
        order = list(range(len(self.lengths)))
        rng.shuffle(order)
        group_size = self.batch_size * GROUP_BATCHES
        batches = []
        for start in range(0, len(order), group_size):
            group = sorted(order[start : start + group_size], key=self.lengths.__getitem__, reverse=True)
            batches += [group[i : i + self.batch_size] for i in range(0, len(group), self.batch_size)]
        if self.drop_last:
            batches = [batch for batch in batches if len(batch) == self.batch_size]
        rng.shuffle(batches)
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.batches(self.epoch)
        self.epoch += 1
        yield from batches

    def __len__(self) -> int:
        if self.drop_last:
            return len(self.lengths) // self.batch_size
        return -(-len(self.lengths) // self.batch_size)
