"""Global batches: every example at most once per epoch, the same for any process count."""

from __future__ import annotations

import random

from dpo_exp.data.collate import IndexedItem
from dpo_exp.data.sampling import GlobalBatchSampler, row_length
from dpo_exp.data.tokenize import TokenizedPair, TokenizedUnpaired


def test_row_length_is_prompt_plus_longest_completion():
    assert row_length(IndexedItem(0, TokenizedPair([1, 2], [3, 4, 5], [6]))) == 5
    assert row_length(IndexedItem(0, TokenizedUnpaired([1], [2, 3], True))) == 3


def test_every_example_once_and_the_short_batch_is_dropped():
    lengths = [random.Random(i).randint(1, 100) for i in range(103)]
    sampler = GlobalBatchSampler(lengths, 8, seed=0, group_by_length=True)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 12
    seen = [i for batch in batches for i in batch]
    assert len(seen) == len(set(seen)) == 96


def test_unshuffled_batches_are_in_order():
    assert list(GlobalBatchSampler(list(range(10)), 3, seed=0, shuffle=False)) == [
        [0, 1, 2],
        [3, 4, 5],
        [6, 7, 8],
    ]


def test_two_processes_see_the_global_batches_of_one_process():
    lengths = [random.Random(i).randint(1, 50) for i in range(64)]
    for shuffle, grouped in ((True, False), (True, True), (False, False)):
        single = list(GlobalBatchSampler(lengths, 8, seed=5, shuffle=shuffle, group_by_length=grouped))
        ranks = [
            list(
                GlobalBatchSampler(
                    lengths, 4, seed=5, shuffle=shuffle, group_by_length=grouped, world_size=2, rank=r
                )
            )
            for r in (0, 1)
        ]
        assert [a + b for a, b in zip(*ranks, strict=True)] == single


def test_batches_hold_similar_lengths_so_padding_drops():
    lengths = [random.Random(i).randint(32, 160) for i in range(512)]

    def padding(batches: list[list[int]]) -> float:
        padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
        return 1 - sum(lengths[i] for b in batches for i in b) / padded

    grouped = list(GlobalBatchSampler(lengths, 8, seed=0, group_by_length=True))
    shuffled = list(GlobalBatchSampler(lengths, 8, seed=0))
    assert padding(grouped) < 0.05 < 0.2 < padding(shuffled)


def test_order_is_reproducible_and_changes_between_epochs():
    first, second = (
        GlobalBatchSampler(list(range(64)), 4, seed=3),
        GlobalBatchSampler(list(range(64)), 4, seed=3),
    )
    epoch0 = list(first)
    assert epoch0 == list(second)
    first.set_epoch(1)
    assert list(first) != epoch0


def test_lightning_reaches_the_epoch_through_the_dataloader():
    from lightning.fabric.utilities.data import _set_sampler_epoch
    from torch.utils.data import DataLoader

    sampler = GlobalBatchSampler(list(range(64)), 4, seed=3)
    loader = DataLoader(list(range(64)), batch_sampler=sampler)
    _set_sampler_epoch(loader, 2)
    assert sampler.epoch == 2 and [b.tolist() for b in loader] == sampler.global_batches(2)


def test_resuming_mid_epoch_skips_the_batches_done_in_every_pass_over_that_epoch():
    sampler = GlobalBatchSampler(list(range(40)), 4, seed=0)
    epoch1 = sampler.global_batches(1)
    sampler.resume_at(1, 3)
    assert list(sampler) == epoch1[3:] and list(sampler) == epoch1[3:]  # a prefetch pass, then the loop's
    sampler.set_epoch(2)
    assert list(sampler) == sampler.global_batches(2)
