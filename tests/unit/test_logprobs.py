"""Log-probs summed over completion tokens only, with the label shift, in fp32."""

import math

import torch
from torch.testing import assert_close

from dpo_exp.losses.logprobs import IGNORE_INDEX, sequence_logps, split_pairs


def test_uniform_logits_give_minus_log_vocab_per_completion_token():
    # V = 3 uniform logits: every token has log p = -ln 3.
    # labels row: [prompt, prompt, c1, c2, pad] -> after the shift, positions 1 and 2 predict c1, c2.
    logits = torch.zeros(1, 5, 3)
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 1, 2, IGNORE_INDEX]])
    logps, ntokens = sequence_logps(logits, labels)
    assert_close(logps, torch.tensor([-2 * math.log(3)]))
    assert_close(ntokens, torch.tensor([2.0]))


def test_label_shift_reads_the_previous_position():
    # Position 0's logits predict token 1. Put all mass on token 2 at position 0 only:
    # log p(label 2 at position 1) = 0 (after softmax of [-inf, -inf, 0]), else -ln 3.
    logits = torch.zeros(1, 3, 3)
    logits[0, 0] = torch.tensor([-1e4, -1e4, 0.0])
    labels = torch.tensor([[IGNORE_INDEX, 2, 0]])
    logps, ntokens = sequence_logps(logits, labels)
    assert_close(logps, torch.tensor([0.0 - math.log(3)]))
    assert_close(ntokens, torch.tensor([2.0]))


def test_prompt_and_padding_do_not_count_and_rows_are_independent():
    torch.manual_seed(0)
    logits = torch.randn(2, 6, 5)
    labels = torch.tensor(
        [
            [IGNORE_INDEX, IGNORE_INDEX, 3, 1, IGNORE_INDEX, IGNORE_INDEX],
            [IGNORE_INDEX, 4, 4, 0, 2, 1],
        ]
    )
    logps, ntokens = sequence_logps(logits, labels)
    log_probs = logits.log_softmax(-1)
    expected_first = log_probs[0, 1, 3] + log_probs[0, 2, 1]
    expected_second = sum(log_probs[1, t - 1, labels[1, t]] for t in range(1, 6))
    assert_close(logps, torch.stack([expected_first, expected_second]))
    assert_close(ntokens, torch.tensor([2.0, 5.0]))


def test_half_precision_logits_are_scored_in_fp32():
    torch.manual_seed(0)
    logits = torch.randn(1, 4, 7) * 20
    labels = torch.tensor([[IGNORE_INDEX, 1, 2, 3]])
    logps_bf16, _ = sequence_logps(logits.to(torch.bfloat16), labels)
    logps_fp32, _ = sequence_logps(logits.to(torch.bfloat16).float(), labels)
    assert logps_bf16.dtype == torch.float32
    assert_close(logps_bf16, logps_fp32)


def test_split_pairs_takes_chosen_first():
    chosen, rejected = split_pairs(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert chosen.tolist() == [1.0, 2.0] and rejected.tolist() == [3.0, 4.0]
