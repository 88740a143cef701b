"""KTO's mismatched rows: a fixed partner per example, whatever the batch."""

from __future__ import annotations

from dpo_exp.data.collate import IndexedItem, UnpairedCollator, mismatch_partners
from dpo_exp.data.tokenize import TokenizedUnpaired


def test_partners_form_one_cycle_through_every_example_and_never_the_example_itself():
    partners = mismatch_partners(50)
    assert sorted(partners) == list(range(50))  # a permutation
    assert all(partner != index for index, partner in enumerate(partners))
    seen, index = set(), 0
    while index not in seen:
        seen.add(index)
        index = partners[index]
    assert len(seen) == 50  # one cycle
    assert mismatch_partners(50) == partners  # fixed for the split


def test_mismatched_rows_take_the_partners_completion_whichever_batch_the_example_is_in():
    items = [IndexedItem(i, TokenizedUnpaired([10 + i], [20 + i, 30 + i], i % 2 == 0)) for i in range(6)]
    collate = UnpairedCollator.for_split(0, items)
    partners = mismatch_partners(6)
    for batch_items in (items[:3], [items[4], items[1]]):
        batch = collate(batch_items)
        for row, item in enumerate(batch_items):
            partner = partners[item.index]
            assert batch["kl_input_ids"][row].tolist() == [10 + item.index, 20 + partner, 30 + partner]
            assert batch["input_ids"][row].tolist() == [10 + item.index, 20 + item.index, 30 + item.index]
        assert batch["desirable"].tolist() == [item.index % 2 == 0 for item in batch_items]
