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


def test_chunks_of_positions_give_the_same_logps_and_gradients():
    """Chunks of 3 (3 + 3 + 1 of the 7 scored positions) and of 1 against one (N, V) head product."""
    torch.manual_seed(2)
    hidden = torch.randn(2, 6, 4, requires_grad=True)
    head = torch.nn.Linear(4, 9, bias=False)
    labels = torch.randint(0, 9, (2, 6))
    labels[:, :2] = IGNORE_INDEX  # 4 scored positions in row 0
    labels[1, 5] = IGNORE_INDEX  # 3 in row 1
    results = {}
    for chunk_size in (None, 3, 1):
        hidden.grad, head.weight.grad = None, None
        logps, ntokens = completion_logps(hidden, labels, head, chunk_size=chunk_size)
        (logps * torch.tensor([1.0, -2.0])).sum().backward()  # distinct upstream gradients per row
        results[chunk_size] = (logps.detach(), ntokens, hidden.grad.clone(), head.weight.grad.clone())
    assert results[None][1].tolist() == [4.0, 3.0]
    for chunk_size in (3, 1):
        for got, expected in zip(results[chunk_size], results[None], strict=True):
            assert_close(got, expected, rtol=1e-6, atol=1e-6)


def test_chunks_never_hold_more_than_one_chunk_of_logits():
    """Forward keeps no logits for backward; every head product, recomputed ones too, is one chunk."""
    torch.manual_seed(3)
    vocab, chunk = 50, 4
    hidden = torch.randn(3, 9, 6, requires_grad=True)
    head = torch.nn.Linear(6, vocab, bias=False)
    labels = torch.randint(0, vocab, (3, 9))  # 3 x 8 = 24 scored positions: 6 chunks
    head_rows: list[int] = []
    head.register_forward_hook(lambda module, inputs, output: head_rows.append(output.shape[0]))
    saved_logits_rows = []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        if tensor.dim() == 2 and tensor.shape[-1] == vocab:
            saved_logits_rows.append(tensor.shape[0])
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        logps, _ = completion_logps(hidden, labels, head, chunk_size=chunk)
    assert saved_logits_rows == [] and head_rows == [chunk] * 6
    logps.sum().backward()
    assert head_rows == [chunk] * 12  # each chunk's logits recomputed in backward, one at a time
    with torch.no_grad():
        completion_logps(hidden, labels, head, chunk_size=chunk)
    assert head_rows == [chunk] * 18  # no gradient: nothing to recompute
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        completion_logps(hidden, labels, head)
    assert max(saved_logits_rows) == 24  # without chunks all scored positions' logits are kept
