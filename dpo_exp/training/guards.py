"""Non-finite gradients (from a NaN or infinite loss, or an overflow) never reach the weights."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from dpo_exp.console import warn

ACTIONS = ("stop", "skip")


class NonFiniteError(RuntimeError):
    """Training met a non-finite loss or gradient and was told to stop."""


class NonFiniteGuard(L.Callback):
    """Before every optimizer step, check the gradient norm; stop the run, or skip the step.

    `skip` drops the gradients, so the optimizer leaves every weight and its moments as they were
    (AdamW passes over parameters without a gradient), and counts the step in `skipped_steps`.
    Under DDP the gradients are already averaged, so every process takes the same decision.
    """

    def __init__(self, action: str = "stop") -> None:
        if action not in ACTIONS:
            raise ValueError(f"nonfinite must be one of {', '.join(ACTIONS)}, got {action!r}")
        self.action = action
        self.skipped_steps = 0
        self._batch_index: list[int] = []

    def on_train_batch_start(
        self, trainer: L.Trainer, module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._batch_index = batch["index"].tolist()

    def on_before_optimizer_step(
        self, trainer: L.Trainer, module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        gradients = [p.grad for p in module.parameters() if p.grad is not None]
        if not gradients or torch.isfinite(torch.nn.utils.get_total_norm(gradients)):
            return
        where = f"step {trainer.global_step}, batch of examples {self._batch_index}"
        if self.action == "stop":
            raise NonFiniteError(
                f"non-finite loss or gradient at {where} (set nonfinite=skip to skip such steps)"
            )
        for parameter in module.parameters():
            parameter.grad = None
        self.skipped_steps += 1
        warn(f"skipped a step with non-finite gradients at {where}")
        module.log("train/skipped_steps", float(self.skipped_steps))
