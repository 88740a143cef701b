"""Completions from any Hugging Face causal LM with `generate`, as token ids cut at EOS.

A completion that reached `max_new_tokens` without EOS has none: `ended` tells the two apart.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from transformers import LogitsProcessor, LogitsProcessorList, PreTrainedModel


def encode_prompts(tokenizer: Any, prompts: list[str]) -> list[list[int]]:
    """Prompt ids as training tokenises them (the tokenizer's own special tokens, e.g. BOS)."""
    return [tokenizer.encode(prompt, add_special_tokens=True) for prompt in prompts]


def left_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), padded on the left so every row's last token is a prompt token."""
    width = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for index, row in enumerate(rows):
        input_ids[index, width - len(row) :] = torch.tensor(row, dtype=torch.long)
        attention_mask[index, width - len(row) :] = 1
    return input_ids, attention_mask


def cut_at_eos(ids: list[int], eos_id: int | None) -> list[int]:
    """The ids up to and including the first EOS (the rest is padding `generate` appended)."""
    if eos_id is not None and eos_id in ids:
        return ids[: ids.index(eos_id) + 1]
    return ids


def ended(ids: list[int], eos_id: int | None) -> bool:
    """Whether a completion from `generate_completions` ended (with EOS); one that did not was cut
    by max_new_tokens."""
    return eos_id is not None and ids[-1:] == [eos_id]


class Ticker(LogitsProcessor):
    """Moves a progress bar by one decoding step of a batch; leaves the scores as they are."""

    def __init__(self, bar: Any, prompts_per_step: float) -> None:
        self.bar = bar
        self.prompts_per_step = prompts_per_step

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self.bar.update(self.prompts_per_step)
        return scores


@torch.no_grad()
def generate_completions(
    model: PreTrainedModel,
    tokenizer: Any,
    prompt_ids: list[list[int]],
    *,
    num_samples: int = 1,
    greedy: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    max_new_tokens: int,
    batch_size: int = 256,
    bar: Any = None,
) -> list[list[list[int]]]:
    """For each prompt, `num_samples` completions as ids ending in EOS (unless cut by max_new_tokens).

    Sampling is from the model's own distribution reshaped only by `temperature` and `top_p`
    (top-k is switched off); `greedy` takes the argmax and one completion per prompt. `bar`, a
    progress bar counting prompts, moves with every decoding step.
    """
    was_training = model.training
    model.eval()
    options: dict[str, Any] = {"do_sample": False, "num_return_sequences": 1}
    if not greedy:
        options = {
            "do_sample": True,
            "temperature": temperature,
            "top_p": top_p,
            "top_k": 0,
            "num_return_sequences": num_samples,
        }
    options.update(max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id)
    per_prompt = options["num_return_sequences"]

    def complete(rows: list[list[int]]) -> list[list[list[int]]]:
        new_tokens = generate_batch(model, rows, tokenizer.eos_token_id, options, bar)
        return [
            [
                cut_at_eos(sample, tokenizer.eos_token_id)
                for sample in new_tokens[row * per_prompt : (row + 1) * per_prompt]
            ]
            for row in range(len(rows))
        ]

    with sampling_under_determinism():
        completions = in_batches_that_fit(prompt_ids, batch_size, complete)
    model.train(was_training)
    return completions


def in_batches_that_fit(rows: list[Any], batch_size: int, run: Callable[[list[Any]], list[Any]]) -> list[Any]:
    """`run` over consecutive batches of at most `batch_size` rows, results concatenated. A batch
    the accelerator has no memory for is halved and run again (down to one row), and the batches
    after it keep the smaller size: the configured size is an upper bound, sized for no one model."""
    results: list[Any] = []
    start = 0
    while start < len(rows):
        batch = rows[start : start + batch_size]
        try:
            results.extend(run(batch))
        except torch.OutOfMemoryError:
            if batch_size == 1:
                raise
            batch_size = max(1, len(batch) // 2)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            continue
        start += len(batch)
    return results


@contextlib.contextmanager
def sampling_under_determinism() -> Iterator[None]:
    """Sampling where Lightning's `deterministic: true` is in force: torch then refuses CUDA
    kernels that have no deterministic implementation, and top-p's cumulative sum is one; here they
    warn instead of stopping the run. CPU kernels are deterministic either way."""
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    if enabled:
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        if enabled:
            torch.use_deterministic_algorithms(True, warn_only=warn_only)


def generate_batch(
    model: PreTrainedModel, rows: list[list[int]], eos_id: int | None, options: dict[str, Any], bar: Any
) -> list[list[int]]:
    """The new tokens of every sequence `generate` returns for one batch of prompts."""
    input_ids, attention_mask = left_pad(rows, options["pad_token_id"])
    device = next(model.parameters()).device
    ticker = [] if bar is None else [Ticker(bar, len(rows) / options["max_new_tokens"])]
    done = len(rows) + (0 if bar is None else bar.n)
    output = model.generate(
        input_ids=input_ids.to(device),
        attention_mask=attention_mask.to(device),
        eos_token_id=eos_id,
        logits_processor=LogitsProcessorList(ticker),
        **options,
    )
    if bar is not None:
        bar.update(done - bar.n)  # the batch may have ended before max_new_tokens
    return output[:, input_ids.shape[1] :].tolist()


def decode(tokenizer: Any, ids: list[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=True)
