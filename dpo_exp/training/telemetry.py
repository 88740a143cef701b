"""Training telemetry: tokens/s, padding fraction, peak memory and an MFU estimate.

Logged every N steps under `perf/` and kept for the summary.

Model FLOPs, counted per batch from its rows' lengths n (causal attention, fwd = 1, bwd = 2 units):
- a forward over a row costs 2·P·n + 2·L·d·n², P the weights of every linear layer (LM head
  included), L layers, d the hidden width; training the policy costs three times that;
- the reference forward counts when it runs (not with cached reference log-probs), as do KTO's
  no-grad passes over its mismatched rows.
MFU is those FLOPs over the measured step time, divided by a configurable peak FLOP/s.
"""

from __future__ import annotations

import resource
import sys
import time
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch

from dpo_exp.data.collate import PAD


@dataclass(frozen=True)
class ModelShape:
    """What model FLOPs depend on."""

    linear_params: int  # weights of every nn.Linear, LM head included (tied or not)
    layers: int
    hidden: int

    def forward_flops(self, lengths: torch.Tensor) -> float:
        """FLOPs of one forward over rows of these lengths."""
        lengths = lengths.to(torch.float64)
        return float(
            2 * self.linear_params * lengths.sum() + 2 * self.layers * self.hidden * (lengths**2).sum()
        )


def model_flops_shape(model: torch.nn.Module) -> ModelShape:
    config = model.config
    linear_params = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    return ModelShape(linear_params, int(config.num_hidden_layers), int(config.hidden_size))


def peak_memory_gb() -> float:
    """Peak GPU memory allocated when on a GPU, else the process's peak resident set size."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.max_memory_allocated() / 2**30
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**30 if sys.platform == "darwin" else peak / 2**20  # bytes on macOS, KiB on Linux


def row_lengths(batch: dict[str, torch.Tensor], prefix: str = "") -> torch.Tensor:
    """Non-padding positions of each row the model runs on."""
    if f"{prefix}token_parts" in batch:
        return (batch[f"{prefix}token_parts"] != PAD).sum(-1)
    return batch[f"{prefix}attention_mask"].sum(-1)


def sequence_tokens(batch: dict[str, torch.Tensor], prefix: str = "") -> int:
    """Tokens of the batch's chosen and rejected sequences, a shared prompt counted in each."""
    if f"{prefix}sequence_lengths" in batch:
        return int(batch[f"{prefix}sequence_lengths"].sum())
    return int(batch[f"{prefix}attention_mask"].sum())


class TokenThroughput(L.Callback):
    """Counts tokens of chosen and rejected sequences, and model FLOPs, over measured time.

    Tokens are counted as in one padded row per sequence whatever the layout, so tokens/s compare
    across layouts; the padding fraction and the FLOPs are those of the rows actually run.

    Time runs from the first training batch to the last, so start-up and validation are excluded.
    """

    def __init__(
        self, log_every_n_steps: int = 10, *, model: ModelShape | None = None, peak_flops: float = 150e9
    ) -> None:
        self.log_every_n_steps = log_every_n_steps
        self.model = model
        self.peak_flops = peak_flops
        self.tokens = 0  # of the chosen and rejected sequences, however they are laid out in rows
        self.real_positions = 0  # input positions that are not padding
        self.positions = 0
        self.flops = 0.0
        self.train_seconds = 0.0
        self._batch_start = 0.0

    def on_train_batch_start(
        self, trainer: L.Trainer, module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._batch_start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.train_seconds += time.perf_counter() - self._batch_start
        for prefix in ("", "kl_"):
            if f"{prefix}input_ids" in batch:
                self.tokens += int(sequence_tokens(batch, prefix))
                self.real_positions += int(row_lengths(batch, prefix).sum())
                self.positions += batch[f"{prefix}input_ids"].numel()
        if self.model is not None:
            self.flops += self.batch_flops(
                batch, reference_runs=getattr(module, "reference", None) is not None
            )
        if trainer.global_step % self.log_every_n_steps == 0:
            module.log_dict(
                {
                    "perf/tokens_per_s": self.tokens_per_s,
                    "perf/padding_fraction": self.padding_fraction,
                    "perf/peak_memory_gb": peak_memory_gb(),
                    "perf/mfu": self.mfu,
                }
            )

    def batch_flops(self, batch: dict[str, torch.Tensor], *, reference_runs: bool) -> float:
        """Model FLOPs of one training step on `batch` (see the module docstring)."""
        forward = self.model.forward_flops(row_lengths(batch))
        reference_forward = reference_runs and "ref_logps" not in batch
        flops = 3 * forward + (forward if reference_forward else 0.0)
        if "kl_attention_mask" in batch:
            kl_forward = self.model.forward_flops(row_lengths(batch, "kl_"))
            flops += kl_forward * (2 if reference_runs else 1)
        return flops

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.train_seconds if self.train_seconds else 0.0

    @property
    def padding_fraction(self) -> float:
        return 1 - self.real_positions / self.positions if self.positions else 0.0

    @property
    def mfu(self) -> float:
        """Model FLOPs per second over the configured peak."""
        return self.flops / self.train_seconds / self.peak_flops if self.train_seconds else 0.0

    @property
    def peak_memory_gb(self) -> float:
        return peak_memory_gb()

    def figures(self) -> dict[str, float | int]:
        """The run's throughput figures, as summary.json keeps them."""
        return {
            "train_time_s": self.train_seconds,
            "tokens": self.tokens,
            "tokens_per_s": self.tokens_per_s,
            "padding_fraction": self.padding_fraction,
            "peak_memory_gb": self.peak_memory_gb,
            "mfu": self.mfu,
        }
