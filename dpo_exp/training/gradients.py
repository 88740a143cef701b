"""The gradient norm before clipping, and how often clipping changed the gradients.

Logged as `train/grad_norm` (the step's global L2 norm, as `clip_grad_norm_` measures it before it
scales) and `train/clipped_fraction` (of the optimizer steps since the previous logged row, those
whose gradients clipping scaled down). Read where Lightning reads them to clip: in
`on_before_optimizer_step`, after the loss scaler unscaled them and before clipping.
"""

from __future__ import annotations

import lightning as L
import torch

# clip_grad_norm_'s own rule: it scales by max_norm / (norm + 1e-6) when that is below 1.
CLIP_EPS = 1e-6


def total_norm(module: torch.nn.Module) -> float | None:
    """The global L2 norm of the module's gradients (every shard's, under FSDP), or None without any."""
    gradients = [p.grad for p in module.parameters() if p.grad is not None]
    if not gradients:
        return None
    norm = torch.nn.utils.get_total_norm(gradients)
    if hasattr(norm, "full_tensor"):  # a DTensor: each rank holds its shards' part
        norm = norm.full_tensor()
    return float(norm)


def clips(module: torch.nn.Module, norm: float, clip_val: float | None, algorithm: str | None) -> bool:
    """Whether Lightning's clipping at `clip_val` changes these gradients (of total norm `norm`)."""
    if not clip_val:
        return False
    if algorithm == "value":  # elementwise: whether some element lies outside [-clip_val, clip_val]
        return any(bool((p.grad.abs() > clip_val).any()) for p in module.parameters() if p.grad is not None)
    return clip_val / (norm + CLIP_EPS) < 1


class GradientTelemetry(L.Callback):
    """Logs the gradient norm before clipping and the fraction of steps clipped, with each logged row."""

    def __init__(self) -> None:
        self.steps = 0  # optimizer steps since the last logged row
        self.clipped = 0
        self.total_steps = 0  # over the whole run, for the summary
        self.total_clipped = 0

    def on_before_optimizer_step(
        self, trainer: L.Trainer, module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        norm = total_norm(module)
        if norm is None:  # a skipped step (nonfinite=skip cleared its gradients)
            return
        clipped = clips(module, norm, trainer.gradient_clip_val, trainer.gradient_clip_algorithm)
        self.steps, self.clipped = self.steps + 1, self.clipped + clipped
        self.total_steps, self.total_clipped = self.total_steps + 1, self.total_clipped + clipped
        # Lightning writes a row after the step that makes (steps taken) a multiple of the interval.
        if (trainer.global_step + 1) % trainer.log_every_n_steps == 0:
            module.log("train/grad_norm", norm)
            module.log("train/clipped_fraction", self.clipped / self.steps)
            self.steps, self.clipped = 0, 0

    def figures(self) -> dict[str, float]:
        """The fraction of the optimizer steps since the run started (or resumed) that clipping changed."""
        return {"clipped_fraction": self.total_clipped / self.total_steps if self.total_steps else 0.0}
