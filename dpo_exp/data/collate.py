"""Batches of tokenised records as padded tensors for one concatenated forward pass."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dpo_exp.data.tokenize import TokenizedPair, TokenizedUnpaired
from dpo_exp.logprobs import IGNORE_INDEX


@dataclass(frozen=True)
class IndexedItem:
    """A tokenised record and its position in its split (the key of cached reference log-probs)."""

    index: int
    record: TokenizedPair | TokenizedUnpaired


def pad_sequences(
    prompts: list[list[int]], completions: list[list[int]], pad_id: int
) -> dict[str, torch.Tensor]:
    """Right-padded input_ids, attention_mask and labels (prompt and padding labelled IGNORE_INDEX)."""
    lengths = [len(p) + len(c) for p, c in zip(prompts, completions, strict=True)]
    width = max(lengths)
    input_ids = torch.full((len(lengths), width), pad_id, dtype=torch.long)
    labels = torch.full((len(lengths), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(lengths), width), dtype=torch.long)
    for row, (prompt, completion) in enumerate(zip(prompts, completions, strict=True)):
        sequence = torch.tensor(prompt + completion, dtype=torch.long)
        input_ids[row, : len(sequence)] = sequence
        labels[row, len(prompt) : len(sequence)] = sequence[len(prompt) :]
        attention_mask[row, : len(sequence)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


@dataclass(frozen=True)
class PairCollator:
    """Chosen rows first, then rejected rows: (2B, T), so one forward scores both."""

    pad_id: int

    def __call__(self, items: list[IndexedItem]) -> dict[str, torch.Tensor]:
        pairs = [item.record for item in items]
        prompts = [p.prompt_ids for p in pairs] * 2
        completions = [p.chosen_ids for p in pairs] + [p.rejected_ids for p in pairs]
        batch = pad_sequences(prompts, completions, self.pad_id)
        batch["index"] = torch.tensor([item.index for item in items])
        return batch


@dataclass(frozen=True)
class UnpairedCollator:
    """Completions with their labels, plus mismatched (prompt i, completion i+1) rows.

    The mismatched rows estimate KTO's reference point z0 = KL(policy || reference) on pairs
    whose completion does not answer the prompt, as in Ethayarajh et al. (2024).
    """

    pad_id: int

    def __call__(self, items: list[IndexedItem]) -> dict[str, torch.Tensor]:
        examples = [item.record for item in items]
        prompts = [e.prompt_ids for e in examples]
        completions = [e.completion_ids for e in examples]
        batch = pad_sequences(prompts, completions, self.pad_id)
        shifted = completions[1:] + completions[:1]
        mismatched = pad_sequences(prompts, shifted, self.pad_id)
        batch.update({f"kl_{name}": value for name, value in mismatched.items()})
        batch["desirable"] = torch.tensor([e.desirable for e in examples], dtype=torch.bool)
        batch["index"] = torch.tensor([item.index for item in items])
        return batch


@dataclass
class SplitLogps:
    """Reference log-probs of one split's pairs, indexed by example index: (N,) each."""

    chosen: torch.Tensor
    rejected: torch.Tensor


@dataclass(frozen=True)
class WithReferenceLogps:
    """Wraps a pair collator: adds cached `ref_logps`, aligned with the chosen‖rejected rows."""

    collate: PairCollator
    logps: SplitLogps

    def __call__(self, items: list[IndexedItem]) -> dict[str, torch.Tensor]:
        batch = self.collate(items)
        index = batch["index"]
        batch["ref_logps"] = torch.cat([self.logps.chosen[index], self.logps.rejected[index]])
        return batch
