"""Tokens per second and padding fraction of training, logged and kept for the summary."""

from __future__ import annotations

import time
from typing import Any

import lightning as L


class TokenThroughput(L.Callback):
    """Counts non-padding tokens (every row, chosen and rejected) over measured training time.

    Time runs from the first training batch to the last, so start-up and validation are excluded.
    """

    def __init__(self, log_every_n_steps: int = 10) -> None:
        self.log_every_n_steps = log_every_n_steps
        self.tokens = 0
        self.padded_tokens = 0
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
            if f"{prefix}attention_mask" in batch:
                mask = batch[f"{prefix}attention_mask"]
                self.tokens += int(mask.sum())
                self.padded_tokens += mask.numel()
        if trainer.global_step % self.log_every_n_steps == 0:
            module.log_dict(
                {"perf/tokens_per_s": self.tokens_per_s, "perf/padding_fraction": self.padding_fraction}
            )

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.train_seconds if self.train_seconds else 0.0

    @property
    def padding_fraction(self) -> float:
        return 1 - self.tokens / self.padded_tokens if self.padded_tokens else 0.0
