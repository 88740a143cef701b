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

    Under a loss scaler (`16-mixed`'s GradScaler) a finite loss with non-finite gradients is the
    scaler's routine overflow: it skips that step itself and lowers its scale, so the guard only
    counts it in `scaler_skipped_steps`. A non-finite loss is no overflow and is acted on as above;
    and since the guard then lets such gradients reach the scaler, it checks the weights after
    every step and stops on a non-finite one.
    """

    def __init__(self, action: str = "stop") -> None:
        if action not in ACTIONS:
            raise ValueError(f"nonfinite must be one of {', '.join(ACTIONS)}, got {action!r}")
        self.action = action
        self.skipped_steps = 0
        self.scaler_skipped_steps = 0
        self._batch_index: list[int] = []
        self._loss_finite = True  # every loss since the last optimizer step (gradient accumulation)

    def figures(self) -> dict[str, int]:
        """The steps this guard skipped, and those the loss scaler skipped on an overflow."""
        return {"skipped_steps": self.skipped_steps, "scaler_skipped_steps": self.scaler_skipped_steps}

    def on_train_batch_start(
        self, trainer: L.Trainer, module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._batch_index = batch["index"].tolist()

    def on_before_backward(self, trainer: L.Trainer, module: L.LightningModule, loss: torch.Tensor) -> None:
        # The loss as the backward receives it (scaled under a loss scaler: finite exactly when it is).
        self._loss_finite = self._loss_finite and bool(torch.isfinite(loss.detach()).all())

    def on_before_optimizer_step(
        self, trainer: L.Trainer, module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        loss_finite, self._loss_finite = self._loss_finite, True
        gradients = [p.grad for p in module.parameters() if p.grad is not None]
        if not gradients or torch.isfinite(torch.nn.utils.get_total_norm(gradients)):
            return
        if loss_finite and loss_scaler(trainer) is not None:
            self.scaler_skipped_steps += 1
            module.log("train/scaler_skipped_steps", float(self.scaler_skipped_steps))
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

    def on_train_batch_end(
        self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if loss_scaler(trainer) is None:
            return  # the gradient check above let no non-finite value reach the weights
        weights = [p.detach() for p in module.parameters() if p.requires_grad]
        if weights and not torch.isfinite(torch.nn.utils.get_total_norm(weights)):
            raise NonFiniteError(
                f"non-finite weights after step {trainer.global_step}, batch of examples {self._batch_index}"
            )


def loss_scaler(trainer: L.Trainer) -> Any:
    """The precision plugin's gradient scaler (`16-mixed`), or None."""
    scaler = getattr(trainer.precision_plugin, "scaler", None)
    return scaler if scaler is not None and scaler.is_enabled() else None
