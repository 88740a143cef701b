"""FLOPs of a training step, counted as its matrix products run (what `FlopCounterMode` counts).

A step runs the policy forward and backward on the batch's rows and, where the loss needs them
and no cache gives them, the reference forward (a separate model, or a LoRA policy with its
adapter off); KTO adds no-grad passes of both over its mismatched `kl_` rows. Each pass costs:
- every linear layer, 2·in·out per position of every row (padding included: the kernels run on
  it), the LM head on the scored positions only when the head runs on completions;
- attention, 4·(query heads × head dim)·T² per row of width T and layer: scores and values over
  the whole square, as masked kernels compute it;
- backward: a linear layer's weight gradient when its weight trains, its input gradient when its
  input needs one (not under the first layer of a LoRA model, whose embeddings are frozen),
  each as much as its forward; attention's backward twice its forward.
Recomputation (activation checkpointing, logits chunks) is not counted: these are model FLOPs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.pytorch_utils import Conv1D

from dpo_exp.losses.logprobs import IGNORE_INDEX
from dpo_exp.models.lora import is_lora
from dpo_exp.models.scoring import head_on_completions_supported

MATMUL_LAYERS = (torch.nn.Linear, Conv1D)  # GPT-2's projections are Conv1D (an addmm)


@dataclass(frozen=True)
class LinearCost:
    """One linear layer: its weights (in × out) and which gradients its backward computes."""

    weights: int
    trainable: bool
    input_grad: bool
    adapter: bool  # a LoRA matrix: not run when the adapter is off


@dataclass(frozen=True)
class ModelCosts:
    """What a causal LM's matmul FLOPs depend on."""

    decoder: tuple[LinearCost, ...]  # every linear layer below the LM head, each run once a position
    head: LinearCost
    layers: int
    attention_width: int  # query heads × head dim

    def forward(self, positions: int, square: int, head_rows: int, *, adapters: bool = True) -> float:
        """One forward: `positions` rows × width, `square` the sum of rows' width², `head_rows`
        positions given logits."""
        decoder = sum(layer.weights for layer in self.decoder if adapters or not layer.adapter)
        attention = 4 * self.layers * self.attention_width * square
        return 2.0 * decoder * positions + attention + 2.0 * self.head.weights * head_rows

    def backward(self, positions: int, square: int, head_rows: int) -> float:
        """The backward of a forward on the same rows."""
        decoder = sum(layer.weights * (layer.trainable + layer.input_grad) for layer in self.decoder)
        head = self.head.weights * (self.head.trainable + self.head.input_grad)
        attention = 8 * self.layers * self.attention_width * square
        return 2.0 * decoder * positions + attention + 2.0 * head * head_rows

    @classmethod
    def of(cls, model: torch.nn.Module) -> ModelCosts:
        """The model's linear layers, with which of their inputs need gradients (from a 2-token
        forward of the decoder with hooks on them)."""
        head_module = model.get_output_embeddings()
        needs_grad: dict[torch.nn.Module, bool] = {}

        def record(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            needs_grad.setdefault(module, inputs[0].requires_grad)

        hooks = [
            module.register_forward_hook(record)
            for module in model.modules()
            if isinstance(module, MATMUL_LAYERS) and module is not head_module
        ]
        try:
            device = next(model.parameters()).device
            with torch.enable_grad():
                model.get_decoder()(input_ids=torch.zeros(1, 2, dtype=torch.long, device=device))
        finally:
            for hook in hooks:
                hook.remove()
        decoder = tuple(
            LinearCost(linear_weights(module), module.weight.requires_grad, grad, "lora_" in name)
            for name, module in model.named_modules()
            for grad in [needs_grad.get(module)]
            if grad is not None
        )
        head = LinearCost(linear_weights(head_module), head_module.weight.requires_grad, True, False)
        config = model.config
        heads = int(config.num_attention_heads)
        head_dim = getattr(config, "head_dim", None) or int(config.hidden_size) // heads
        return cls(decoder, head, int(config.num_hidden_layers), heads * int(head_dim))


def linear_weights(module: torch.nn.Module) -> int:
    """The weights a linear layer multiplies by, in × out: from its declared sizes where it has
    them, since a quantized layer's stored weight is packed (bitsandbytes' 4-bit: two to a byte)."""
    sizes = getattr(module, "in_features", None), getattr(module, "out_features", None)
    if all(isinstance(size, int) for size in sizes):
        return sizes[0] * sizes[1]
    return module.weight.numel()


@dataclass(frozen=True)
class RowShape:
    """What a pass over some rows costs: positions, sum of width², scored positions."""

    positions: int
    square: int
    scored: int

    @classmethod
    def of(cls, batch: dict[str, torch.Tensor], prefix: str = "") -> RowShape:
        rows, width = batch[f"{prefix}input_ids"].shape
        if f"{prefix}token_parts" in batch:
            scored = int(batch[f"{prefix}score_index"].numel())
        else:
            scored = int((batch[f"{prefix}labels"][:, 1:] != IGNORE_INDEX).sum())
        return cls(rows * width, rows * width**2, scored)


@dataclass(frozen=True)
class StepFlops:
    """Counts a training step's FLOPs on a batch, for one run's policy, reference and loss."""

    policy: ModelCosts
    reference: ModelCosts | None  # None: no reference forward (the loss needs none)
    lora_reference: bool  # the reference is the policy with its adapter off
    head_supported: bool  # every model's logits are a plain LM head (`head_on_completions_supported`)
    mismatched_rows: bool  # KTO: no-grad policy and reference passes over the `kl_` rows

    @classmethod
    def of(
        cls,
        policy: torch.nn.Module,
        reference: torch.nn.Module | None,
        *,
        needs_reference: bool,
        paired: bool,
    ) -> StepFlops:
        lora_reference = needs_reference and reference is None and is_lora(policy)
        policy_costs = ModelCosts.of(policy)
        if not needs_reference:
            reference_costs = None
        elif reference is None:
            reference_costs = policy_costs  # a LoRA policy, adapter off; or only cached log-probs
        else:
            reference_costs = ModelCosts.of(reference)
        models = [model for model in (policy, reference) if model is not None]
        head_supported = all(map(head_on_completions_supported, models))
        return cls(
            policy_costs, reference_costs, lora_reference, head_supported, needs_reference and not paired
        )

    def __call__(self, batch: dict[str, torch.Tensor], *, head_on_completions: bool) -> float:
        """FLOPs of one training step on `batch`; `head_on_completions` as the module runs it."""
        head_on_completions = head_on_completions and self.head_supported
        flops = self._passes(batch, "", train=True, head_on_completions=head_on_completions)
        if self.mismatched_rows and "kl_input_ids" in batch:
            flops += self._passes(batch, "kl_", train=False, head_on_completions=head_on_completions)
        return flops

    def _passes(
        self, batch: dict[str, torch.Tensor], prefix: str, *, train: bool, head_on_completions: bool
    ) -> float:
        rows = RowShape.of(batch, prefix)
        head_rows = rows.scored if head_on_completions else rows.positions
        shape = (rows.positions, rows.square, head_rows)
        flops = self.policy.forward(*shape)
        if train:
            flops += self.policy.backward(*shape)
        if self.reference is not None and f"{prefix}ref_logps" not in batch:
            flops += self.reference.forward(*shape, adapters=not self.lora_reference)
        return flops
