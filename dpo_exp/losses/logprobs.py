"""Per-sequence log-probabilities of completions, from logits and labels (torch only)."""

from __future__ import annotations

import torch

IGNORE_INDEX = -100  # label of prompt and padding positions: not scored


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of log p(token) over completion tokens, and the number of those tokens.

    logits: (B, T, V) from a causal LM over input_ids; labels: (B, T), equal to input_ids on
    completion tokens and IGNORE_INDEX elsewhere. Position t predicts token t + 1, hence the shift.
    The log-softmax runs in fp32 whatever the model's dtype.
    Returns (logps (B,), ntokens (B,)), both fp32.
    """
    labels = labels[:, 1:]
    logits = logits[:, :-1, :]
    mask = labels != IGNORE_INDEX
    safe_labels = labels.masked_fill(~mask, 0)  # any valid index; masked out below
    token_logps = token_log_softmax(logits, safe_labels)
    token_logps = token_logps * mask
    return token_logps.sum(-1), mask.sum(-1).to(torch.float32)


def token_log_softmax(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[label] in fp32, without materialising a (B, T, V) fp32 copy twice."""
    logits = logits.float()
    label_logits = torch.gather(logits, -1, labels.unsqueeze(-1)).squeeze(-1)
    return label_logits - torch.logsumexp(logits, dim=-1)


def split_pairs(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a concatenated (2B, ...) chosen‖rejected tensor into its chosen and rejected halves."""
    half = values.shape[0] // 2
    return values[:half], values[half:]


def completion_logps(
    hidden: torch.Tensor, labels: torch.Tensor, head: torch.nn.Module
) -> tuple[torch.Tensor, torch.Tensor]:
    """`sequence_logps(head(hidden), labels)`, with the head run on scored positions only.

    hidden: (B, T, H) last hidden states; head: the LM head, (..., H) -> (..., V). Prompt and
    padding positions never need logits, so gathering the N scored positions first turns a
    (B, T, V) head product and log-softmax into an (N, V) one.
    Returns (logps (B,), ntokens (B,)), both fp32.
    """
    labels = labels[:, 1:]
    mask = labels != IGNORE_INDEX
    rows, columns = mask.nonzero(as_tuple=True)  # (N,), (N,): position t predicts token t + 1
    logits = head(hidden[:, :-1][rows, columns])  # (N, V)
    token_logps = token_log_softmax(logits, labels[rows, columns])  # (N,)
    logps = torch.zeros(labels.shape[0], dtype=torch.float32, device=hidden.device)
    logps = logps.index_add(0, rows, token_logps)
    return logps, mask.sum(-1).to(torch.float32)
