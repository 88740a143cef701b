"""Batches of tokenised records as padded tensors for one concatenated forward pass."""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from dpo_exp.data.tokenize import TokenizedPair, TokenizedUnpaired
from dpo_exp.losses.logprobs import IGNORE_INDEX


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
        return batch | pair_values(pairs)


def pair_values(pairs: list[TokenizedPair]) -> dict[str, CachedLogps]:
    """The pairs' numbers from the data, where every pair has them: `chosen_scores` and
    `rejected_scores` (rewards), `pair_weights`; (B,) fp32 each, never cast (`CachedLogps`)."""
    values = {}
    if pairs and all(pair.scores is not None for pair in pairs):
        scores = torch.tensor([pair.scores for pair in pairs], dtype=torch.float32)
        values["chosen_scores"], values["rejected_scores"] = (
            CachedLogps(scores[:, 0]),
            CachedLogps(scores[:, 1]),
        )
    if pairs and all(pair.weight is not None for pair in pairs):
        values["pair_weights"] = CachedLogps(
            torch.tensor([pair.weight for pair in pairs], dtype=torch.float32)
        )
    return values


# What each position of a shared-prompt row holds (`token_parts`).
PAD, PROMPT, CHOSEN, REJECTED = 0, 1, 2, 3


@dataclass(frozen=True)
class SharedPromptCollator:
    """One row per pair, prompt ‖ chosen ‖ rejected: the prompt is computed once for both.

    The rejected completion restarts its positions where the prompt ends and, through the mask
    built from `token_parts` and `segments` (see `scoring.shared_prompt_mask`), sees the prompt
    but not the chosen completion, so each completion gets exactly the log-probs of its own padded
    row. With `pack`, a row holds as many pairs as fit in the batch's longest pair (`pack_rows`),
    each pair a segment of its own (`segments`: its slot in the row, -1 on padding) that sees no
    other, its positions restarting at 0: fewer rows and less padding, the same log-probs.
    Scored tokens are listed flat: `score_index` (the position predicting the token, in the
    flattened (rows·T) batch), `score_targets` (the token) and `score_sequence` (which of the 2B
    chosen‖rejected sequences it belongs to, the order of `PairCollator`'s rows).
    `sequence_lengths` (2B,) are prompt + completion lengths, as the padded rows would have.
    """

    pad_id: int
    pack: bool = False

    def __call__(self, items: list[IndexedItem]) -> dict[str, torch.Tensor]:
        pairs = [item.record for item in items]
        sizes = [len(p.prompt_ids) + len(p.chosen_ids) + len(p.rejected_ids) for p in pairs]
        width = max(sizes)
        rows = pack_rows(sizes, width) if self.pack else [[number] for number in range(len(pairs))]
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        position_ids = torch.zeros((len(rows), width), dtype=torch.long)
        token_parts = torch.full((len(rows), width), PAD, dtype=torch.int8)
        segments = torch.full((len(rows), width), -1, dtype=torch.long)
        score_index, score_targets, score_sequence = [], [], []
        for row, numbers in enumerate(rows):
            offset = 0
            for slot, number in enumerate(numbers):
                pair = pairs[number]
                prompt, chosen, rejected = pair.prompt_ids, pair.chosen_ids, pair.rejected_ids
                start = len(prompt)  # first chosen token, from the pair's first position
                split = start + len(chosen)  # first rejected token
                end = split + len(rejected)
                span = slice(offset, offset + end)
                input_ids[row, span] = torch.tensor(prompt + chosen + rejected, dtype=torch.long)
                position_ids[row, offset : offset + split] = torch.arange(split)
                position_ids[row, offset + split : offset + end] = torch.arange(start, start + len(rejected))
                token_parts[row, offset : offset + start] = PROMPT
                token_parts[row, offset + start : offset + split] = CHOSEN
                token_parts[row, offset + split : offset + end] = REJECTED
                segments[row, span] = slot
                for side, (predictors, targets) in enumerate(scored_tokens(pair)):  # chosen, rejected
                    score_index.append(row * width + offset + predictors)
                    score_targets.append(targets)
                    score_sequence.append(torch.full_like(targets, number + side * len(pairs)))
                offset += end
        lengths = [len(p.prompt_ids) + len(p.chosen_ids) for p in pairs]
        lengths += [len(p.prompt_ids) + len(p.rejected_ids) for p in pairs]
        return {
            "input_ids": input_ids,
            "position_ids": position_ids,
            "token_parts": token_parts,
            "segments": segments,
            "score_index": torch.cat(score_index),
            "score_targets": torch.cat(score_targets),
            "score_sequence": torch.cat(score_sequence),
            "sequence_lengths": torch.tensor(lengths, dtype=torch.long),
            "index": torch.tensor([item.index for item in items]),
        } | pair_values(pairs)


def pack_rows(sizes: list[int], capacity: int) -> list[list[int]]:
    """Item numbers grouped into rows of at most `capacity` positions: first fit, longest first.

    Deterministic (ties keep batch order), and each row lists its items in batch order.
    """
    rows: list[list[int]] = []
    free: list[int] = []
    for number in sorted(range(len(sizes)), key=lambda n: -sizes[n]):
        row = next((r for r, room in enumerate(free) if room >= sizes[number]), None)
        if row is None:
            rows.append([])
            free.append(capacity)
            row = len(rows) - 1
        rows[row].append(number)
        free[row] -= sizes[number]
    return [sorted(row) for row in rows]


def scored_tokens(pair: TokenizedPair) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(predicting positions, target tokens) of the chosen and of the rejected completion in its row.

    Token t of a completion is predicted by the position before it in its own sequence: the last
    prompt token for t = 0 (none when the prompt is empty, as in a padded row).
    """
    start = len(pair.prompt_ids)  # first chosen token
    split = start + len(pair.chosen_ids)  # first rejected token
    end = split + len(pair.rejected_ids)
    chosen_predictors = torch.arange(start - 1, split - 1)
    rejected_predictors = torch.cat([torch.tensor([start - 1]), torch.arange(split, end - 1)])
    scored = slice(1 if start == 0 else 0, None)
    return [
        (chosen_predictors[scored], torch.tensor(pair.chosen_ids, dtype=torch.long)[scored]),
        (
            rejected_predictors[: len(pair.rejected_ids)][scored],
            torch.tensor(pair.rejected_ids, dtype=torch.long)[scored],
        ),
    ]


def mismatch_partners(size: int, seed: int = 0) -> list[int]:
    """For each example index, another example whose completion forms its mismatched row.

    A seeded random cycle over the split: fixed for the split whatever the run's seed, batch size
    or process count (so the reference's log-probs on these rows can be cached), never the example
    itself when there are two or more, and random rather than its neighbour in the file
    (consecutive examples often share a prompt, as k samples of one prompt do).
    """
    order = list(range(size))
    random.Random(seed).shuffle(order)
    partners = [0] * size
    for position, index in enumerate(order):
        partners[index] = order[(position + 1) % size]
    return partners


@dataclass(frozen=True)
class UnpairedCollator:
    """Completions with their labels, plus mismatched (prompt i, completion of partner(i)) rows.

    The mismatched rows estimate KTO's reference point z0 = KL(policy || reference) on pairs
    whose completion does not answer the prompt, as in Ethayarajh et al. (2024). `completions`
    are the split's completions by example index, `partners` from `mismatch_partners`. Without
    `mismatched_rows` (a loss with no reference point: RFT) they are not built, so nothing counts
    or pads rows no step runs.
    """

    pad_id: int
    completions: tuple[list[int], ...]
    partners: tuple[int, ...]
    mismatched_rows: bool = True

    @classmethod
    def for_split(
        cls, pad_id: int, items: list[IndexedItem], *, mismatched_rows: bool = True
    ) -> UnpairedCollator:
        completions = [None] * len(items)
        for item in items:
            completions[item.index] = item.record.completion_ids
        return cls(pad_id, tuple(completions), tuple(mismatch_partners(len(items))), mismatched_rows)

    def __call__(self, items: list[IndexedItem]) -> dict[str, torch.Tensor]:
        examples = [item.record for item in items]
        prompts = [e.prompt_ids for e in examples]
        batch = pad_sequences(prompts, [e.completion_ids for e in examples], self.pad_id)
        if self.mismatched_rows:
            mismatched = [self.completions[self.partners[item.index]] for item in items]
            rows = pad_sequences(prompts, mismatched, self.pad_id)
            batch.update({f"kl_{name}": value for name, value in rows.items()})
        batch["desirable"] = torch.tensor([e.desirable for e in examples], dtype=torch.bool)
        batch["index"] = torch.tensor([item.index for item in items])
        return batch


@dataclass
class SplitLogps:
    """Reference log-probs of one split's pairs, indexed by example index: (N,) each."""

    chosen: torch.Tensor
    rejected: torch.Tensor


@dataclass
class UnpairedLogps:
    """Reference log-probs of one split's unpaired examples and their mismatched rows: (N,) each."""

    completion: torch.Tensor
    mismatched: torch.Tensor


class CachedLogps:
    """Cached reference log-probs (or the data's own per-pair numbers) in a batch: moved to the
    device with it, never cast.

    Lightning's half-precision plugins (`bf16-true`, `16-true`, FSDP's) cast every floating tensor
    of a batch before moving it (`convert_input`): a summed log-prob near -962 becomes -964 in bf16,
    a bias in every step's log-ratio. They cast tensors and whatever collections they recurse into
    (dicts, sequences, dataclasses); Lightning moves anything with a `.to()`. So this is a plain
    class, whose `.to()` takes a device only: the cache's fp32 values reach the loss unrounded.
    """

    __slots__ = ("values",)

    def __init__(self, values: torch.Tensor) -> None:
        self.values = values  # (rows,) float32

    def to(self, device: torch.device | str | int, *, non_blocking: bool = False) -> CachedLogps:
        return CachedLogps(self.values.to(device, non_blocking=non_blocking))


@dataclass(frozen=True)
class WithReferenceLogps:
    """Wraps a collator: adds cached `ref_logps` (and `kl_ref_logps`), aligned with its rows."""

    collate: PairCollator | SharedPromptCollator | UnpairedCollator
    logps: SplitLogps | UnpairedLogps

    def __call__(self, items: list[IndexedItem]) -> dict[str, torch.Tensor | CachedLogps]:
        batch = self.collate(items)
        index = batch["index"]
        if isinstance(self.logps, UnpairedLogps):
            batch["ref_logps"] = CachedLogps(self.logps.completion[index])
            batch["kl_ref_logps"] = CachedLogps(self.logps.mismatched[index])
        else:
            batch["ref_logps"] = CachedLogps(
                torch.cat([self.logps.chosen[index], self.logps.rejected[index]])
            )
        return batch
