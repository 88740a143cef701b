"""Shared-prompt rows (prompt ‖ chosen ‖ rejected): layout and attention mask, by hand."""

from __future__ import annotations

import torch

from dpo_exp.data.collate import IndexedItem, SharedPromptCollator
from dpo_exp.data.tokenize import TokenizedPair
from dpo_exp.models.scoring import shared_prompt_mask

PAD_ID = 0


def collate() -> dict[str, torch.Tensor]:
    pairs = [TokenizedPair([5, 6], [7, 8, 9], [10]), TokenizedPair([11], [12], [13, 14])]
    return SharedPromptCollator(PAD_ID)([IndexedItem(i + 3, pair) for i, pair in enumerate(pairs)])


def test_rows_hold_prompt_chosen_rejected_with_rejected_positions_restarting_after_the_prompt():
    batch = collate()
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 0, 0]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 4, 2], [0, 1, 1, 2, 0, 0]]
    assert batch["token_parts"].tolist() == [[1, 1, 2, 2, 2, 3], [1, 2, 3, 3, 0, 0]]
    assert batch["index"].tolist() == [3, 4]


def test_each_completion_token_is_predicted_from_the_position_before_it_in_its_own_sequence():
    batch = collate()
    # Sequences in PairCollator's row order: chosen 0, chosen 1, rejected 0, rejected 1.
    # Row 0 (width 6): chosen 7, 8, 9 from positions 1, 2, 3; rejected 10 from the last prompt token, 1.
    # Row 1 (flat offset 6): chosen 12 from 0; rejected 13 from 0 (the prompt) and 14 from 13's slot, 2.
    assert batch["score_index"].tolist() == [1, 2, 3, 1, 6, 6, 8]
    assert batch["score_targets"].tolist() == [7, 8, 9, 10, 12, 13, 14]
    assert batch["score_sequence"].tolist() == [0, 0, 0, 2, 1, 3, 3]
    assert batch["sequence_lengths"].tolist() == [5, 2, 3, 3]


def test_an_empty_prompt_leaves_the_first_completion_token_unscored_as_a_padded_row_does():
    batch = SharedPromptCollator(PAD_ID)([IndexedItem(0, TokenizedPair([], [7, 8], [9, 10]))])
    assert batch["score_targets"].tolist() == [8, 10]
    assert batch["score_index"].tolist() == [0, 2]


def test_the_mask_is_causal_hides_chosen_from_rejected_and_padding_from_everyone():
    parts = torch.tensor([[1, 2, 3, 3, 0, 0]])
    expected = torch.tensor(
        [
            [1, 0, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0],
            [1, 0, 1, 0, 0, 0],  # rejected: the prompt and itself, not the chosen token
            [1, 0, 1, 1, 0, 0],
            [1, 1, 1, 1, 1, 0],  # padding queries see themselves (no empty softmax row)
            [1, 1, 1, 1, 0, 1],
        ],
        dtype=torch.bool,
    )
    mask = shared_prompt_mask(parts, dtype=torch.float32, additive=False)
    assert mask.shape == (1, 1, 6, 6)
    assert torch.equal(mask[0, 0], expected)
    additive = shared_prompt_mask(parts, dtype=torch.bfloat16, additive=True)
    assert additive.dtype == torch.bfloat16
    assert torch.equal(additive[0, 0] == 0, expected)
    assert (additive[0, 0][~expected] == torch.finfo(torch.bfloat16).min).all()


def test_pack_rows_fits_longest_first_and_keeps_batch_order_within_a_row():
    from dpo_exp.data.collate import pack_rows

    # capacity 10: 9 alone; 6 + 4; 5 + 3 + 2
    assert pack_rows([3, 9, 6, 2, 5, 4], 10) == [[1], [2, 5], [0, 3, 4]]
    assert pack_rows([4, 4], 4) == [[0], [1]]
    assert sorted(n for row in pack_rows([1, 7, 3, 3, 2, 8], 8) for n in row) == list(range(6))
