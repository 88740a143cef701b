"""Per-sequence log-probabilities of completions, from logits and labels (torch only)."""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

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


def head_token_logps(
    hidden: torch.Tensor, targets: torch.Tensor, head: torch.nn.Module, *, chunk_size: int | None = None
) -> torch.Tensor:
    """log softmax(head(hidden))[target] of N scored positions, (N,) fp32, `chunk_size` at a time.

    hidden: (N, H); targets: (N,). At a large vocabulary the (N, V) logits, with their fp32 copy
    and their gradient, are most of a step's activation memory. In chunks of positions only one
    (chunk_size, V) block lives at a time: forward keeps each chunk's log-probs and drops its
    logits, and backward recomputes them (activation checkpointing of the head alone), at the cost
    of one more head product. Same numbers as one (N, V) product, to float rounding.
    """
    if chunk_size is None or hidden.shape[0] <= chunk_size:
        return token_log_softmax(head(hidden), targets)

    def chunk_logps(hidden_chunk: torch.Tensor, target_chunk: torch.Tensor) -> torch.Tensor:
        return token_log_softmax(head(hidden_chunk), target_chunk)

    recompute = torch.is_grad_enabled()
    chunks = []
    for start in range(0, hidden.shape[0], chunk_size):
        hidden_chunk, target_chunk = hidden[start : start + chunk_size], targets[start : start + chunk_size]
        if recompute:
            chunks.append(checkpoint(chunk_logps, hidden_chunk, target_chunk, use_reentrant=False))
        else:
            chunks.append(chunk_logps(hidden_chunk, target_chunk))
    return torch.cat(chunks)


def completion_logps(
    hidden: torch.Tensor, labels: torch.Tensor, head: torch.nn.Module, *, chunk_size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """`sequence_logps(head(hidden), labels)`, with the head run on scored positions only.

    hidden: (B, T, H) last hidden states; head: the LM head, (..., H) -> (..., V). Prompt and
    padding positions never need logits, so gathering the N scored positions first turns a
    (B, T, V) head product and log-softmax into an (N, V) one, run `chunk_size` positions at a
    time (`head_token_logps`).
    Returns (logps (B,), ntokens (B,)), both fp32.
    """
    labels = labels[:, 1:]
    mask = labels != IGNORE_INDEX
    rows, columns = mask.nonzero(as_tuple=True)  # (N,), (N,): position t predicts token t + 1
    token_logps = head_token_logps(
        hidden[:, :-1][rows, columns], labels[rows, columns], head, chunk_size=chunk_size
    )  # (N,)
    logps = torch.zeros(labels.shape[0], dtype=torch.float32, device=hidden.device)
    logps = logps.index_add(0, rows, token_logps)
    return logps, mask.sum(-1).to(torch.float32)
