"""Length-grouped batches: every example once per epoch, similar lengths together, reproducible."""

from __future__ import annotations

import random

from dpo_exp.data.collate import IndexedItem
from dpo_exp.data.sampling import LengthGroupedBatchSampler, row_length
from dpo_exp.data.tokenize import TokenizedPair, TokenizedUnpaired


def test_row_length_is_prompt_plus_longest_completion():
    assert row_length(IndexedItem(0, TokenizedPair([1, 2], [3, 4, 5], [6]))) == 5
    assert row_length(IndexedItem(0, TokenizedUnpaired([1], [2, 3], True))) == 3


def test_every_example_once_and_drop_last_leaves_out_one_short_batch():
    lengths = [random.Random(i).randint(1, 100) for i in range(103)]
    sampler = LengthGroupedBatchSampler(lengths, 8, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 12
    seen = [i for batch in batches for i in batch]
    assert len(seen) == len(set(seen)) == 96
    keep_all = list(LengthGroupedBatchSampler(lengths, 8, seed=0, drop_last=False))
    assert sorted(i for batch in keep_all for i in batch) == list(range(103))


def test_batches_hold_similar_lengths_so_padding_drops():
    lengths = [random.Random(i).randint(32, 160) for i in range(512)]

    def padding(batches: list[list[int]]) -> float:
        padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
        return 1 - sum(lengths[i] for b in batches for i in b) / padded

    grouped = list(LengthGroupedBatchSampler(lengths, 8, seed=0))
    order = list(range(512))
    random.Random(0).shuffle(order)
    shuffled = [order[i : i + 8] for i in range(0, 512, 8)]
    assert padding(grouped) < 0.05 < 0.2 < padding(shuffled)


def test_order_is_reproducible_and_changes_between_epochs():
    lengths = list(range(64))
    first, second = (
        LengthGroupedBatchSampler(lengths, 4, seed=3),
        LengthGroupedBatchSampler(lengths, 4, seed=3),
    )
    epoch0 = list(first)
    assert epoch0 == list(second)
    assert list(first) != epoch0
