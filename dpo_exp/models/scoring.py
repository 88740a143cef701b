"""One forward pass of a causal LM to per-sequence completion log-probs, scoring only what is needed."""

from __future__ import annotations

import torch

from dpo_exp.data.collate import CHOSEN, PAD, REJECTED
from dpo_exp.losses.logprobs import completion_logps, head_token_logps, sequence_logps, token_log_softmax

# Config attributes that make logits more than `lm_head(hidden)`: such models take the plain path.
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier")


def head_on_completions_supported(model: torch.nn.Module) -> bool:
    """Whether logits are exactly `get_output_embeddings()(get_decoder()(...).last_hidden_state)`."""
    config = getattr(model, "config", None)
    if config is None or any(getattr(config, name, None) not in (None, 1, 1.0) for name in _LOGIT_TRANSFORMS):
        return False
    try:
        return model.get_decoder() is not None and model.get_output_embeddings() is not None
    except (AttributeError, NotImplementedError):
        return False


def score_sequences(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    labels: torch.Tensor,
    *,
    head_on_completions: bool = True,
    logits_chunk: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed completion log-probs and token counts of every row, (B,) each, in one forward pass.

    With `head_on_completions` (and a model whose logits are a plain LM head), the decoder runs
    alone and the LM head only on completion positions, `logits_chunk` positions at a time;
    otherwise the full logits are computed. The two give the same numbers.
    """
    if head_on_completions and head_on_completions_supported(model):
        hidden = model.get_decoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return completion_logps(hidden, labels, model.get_output_embeddings(), chunk_size=logits_chunk)
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    return sequence_logps(logits, labels)


# -- shared-prompt rows (`SharedPromptCollator`) -----------------------------------------------------

# Attention kernels that take an explicit (B, 1, T, T) mask; flash attention builds its own.
_MASKED_ATTENTION = ("sdpa", "eager")


def shared_prompt_supported(model: torch.nn.Module) -> bool:
    """Whether the model attends through a custom 4D mask with full (not sliding-window) attention."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "_attn_implementation", None) not in _MASKED_ATTENTION:
        return False
    layer_types = getattr(config, "layer_types", None) or []
    return not any("sliding" in str(kind) for kind in layer_types)


def shared_prompt_mask(
    token_parts: torch.Tensor,
    *,
    dtype: torch.dtype,
    additive: bool,
    segments: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B, 1, T, T) mask: causal within a pair, padding unseen, rejected tokens blind to chosen ones.

    `segments` (B, T), where a row holds several pairs (packed rows), keeps each pair blind to
    the others. Padding queries see themselves, so no softmax row is empty (their outputs are
    never scored). `additive` gives 0 / -inf-like floats of `dtype` (eager attention) instead of
    booleans (SDPA).
    """
    width = token_parts.shape[1]
    causal = torch.ones(width, width, dtype=torch.bool, device=token_parts.device).tril()
    real_keys = (token_parts != PAD)[:, None, :]
    rejected_sees_chosen = (token_parts == REJECTED)[:, :, None] & (token_parts == CHOSEN)[:, None, :]
    mask = causal & real_keys & ~rejected_sees_chosen
    if segments is not None:
        mask &= segments[:, :, None] == segments[:, None, :]
    mask |= torch.eye(width, dtype=torch.bool, device=token_parts.device)
    mask = mask[:, None]
    if not additive:
        return mask
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)


def score_shared_prompt(
    model: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    *,
    head_on_completions: bool = True,
    logits_chunk: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probs and token counts of the 2B chosen‖rejected sequences of shared-prompt rows."""
    additive = model.config._attn_implementation == "eager"
    mask = shared_prompt_mask(
        batch["token_parts"], dtype=model.dtype, additive=additive, segments=batch.get("segments")
    )
    inputs = {"input_ids": batch["input_ids"], "attention_mask": mask, "position_ids": batch["position_ids"]}
    index = batch["score_index"]
    if head_on_completions and head_on_completions_supported(model):
        hidden = model.get_decoder()(**inputs).last_hidden_state
        head = model.get_output_embeddings()
        token_logps = head_token_logps(
            hidden.flatten(0, 1)[index], batch["score_targets"], head, chunk_size=logits_chunk
        )
    else:
        logits = model(**inputs).logits.flatten(0, 1)[index]
        token_logps = token_log_softmax(logits, batch["score_targets"])
    sequences = batch["sequence_lengths"].shape[0]
    logps = torch.zeros(sequences, dtype=torch.float32, device=token_logps.device)
    logps = logps.index_add(0, batch["score_sequence"], token_logps)
    ntokens = torch.bincount(batch["score_sequence"], minlength=sequences).to(torch.float32)
    return logps, ntokens


def score_batch(
    model: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    prefix: str = "",
    *,
    head_on_completions: bool = True,
    logits_chunk: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed completion log-probs and token counts of a batch's sequences, whatever its layout.

    `prefix` selects a second set of rows in the batch (KTO's mismatched `kl_` rows);
    `logits_chunk` bounds the LM-head logits held at once to that many positions.
    """
    if prefix:
        batch = {name.removeprefix(prefix): value for name, value in batch.items() if name.startswith(prefix)}
    if "token_parts" in batch:
        return score_shared_prompt(
            model, batch, head_on_completions=head_on_completions, logits_chunk=logits_chunk
        )
    return score_sequences(
        model,
        batch["input_ids"],
        batch["attention_mask"],
        batch["labels"],
        head_on_completions=head_on_completions,
        logits_chunk=logits_chunk,
    )
