"""The LM head on completion positions only gives the same log-probs as full logits."""

from __future__ import annotations

import torch
from torch.testing import assert_close

from dpo_exp.losses.logprobs import IGNORE_INDEX, completion_logps, sequence_logps


def test_head_on_scored_positions_equals_full_logits():
    torch.manual_seed(0)
    hidden = torch.randn(3, 7, 5)
    head = torch.nn.Linear(5, 11, bias=False)
    labels = torch.randint(0, 11, (3, 7))
    labels[0, :3] = IGNORE_INDEX  # prompt
    labels[1, :2] = IGNORE_INDEX
    labels[1, 5:] = IGNORE_INDEX  # padding
    labels[2, :6] = IGNORE_INDEX  # one scored token
    expected_logps, expected_ntokens = sequence_logps(head(hidden), labels)
    logps, ntokens = completion_logps(hidden, labels, head)
    assert_close(logps, expected_logps)
    assert_close(ntokens, torch.tensor([4.0, 3.0, 1.0]))
    assert_close(ntokens, expected_ntokens)


def test_gradients_equal_full_logits():
    torch.manual_seed(1)
    hidden = torch.randn(2, 6, 4, requires_grad=True)
    head = torch.nn.Linear(4, 9, bias=False)
    labels = torch.randint(0, 9, (2, 6))
    labels[:, :2] = IGNORE_INDEX
    (sequence_logps(head(hidden), labels)[0].sum()).backward()
    expected = hidden.grad.clone()
    hidden.grad = None
    completion_logps(hidden, labels, head)[0].sum().backward()
    assert_close(hidden.grad, expected)
