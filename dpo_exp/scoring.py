"""One forward pass of a causal LM to per-sequence completion log-probs, scoring only what is needed."""

from __future__ import annotations

import torch

from dpo_exp.logprobs import completion_logps, sequence_logps

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
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed completion log-probs and token counts of every row, (B,) each, in one forward pass.

    With `head_on_completions` (and a model whose logits are a plain LM head), the decoder runs
    alone and the LM head only on completion positions; otherwise the full logits are computed.
    The two give the same numbers.
    """
    if head_on_completions and head_on_completions_supported(model):
        hidden = model.get_decoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return completion_logps(hidden, labels, model.get_output_embeddings())
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    return sequence_logps(logits, labels)
