"""Lightning's progress bar, counted in optimizer steps: `train  45%|####   | 180/400 step` (in a
log file, a line now and then: `train 180/400 steps (45%) in 62 s, loss=0.42`).

Lightning's own bars count batches per epoch (`Epoch 2/-2` when a run is set by steps); a run
here is set by `trainer.max_steps`, so one bar runs from the first step to the last, with the
metrics logged with `prog_bar=True` beside it. Validation draws no bar of its own (a callback that
evaluates at length, like the experiment's true-reward evaluation, draws one).
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
from lightning.pytorch.callbacks.progress import ProgressBar

from dpo_exp.console import progress


class StepProgressBar(ProgressBar):
    def __init__(self, name: str = "train") -> None:
        super().__init__()
        self.name = name
        self.enabled = True
        self.bar = None

    def disable(self) -> None:
        self.enabled = False

    def enable(self) -> None:
        self.enabled = True

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        total = trainer.estimated_stepping_batches
        if self.enabled and math.isfinite(total):
            self.bar = progress(total=total, initial=trainer.global_step, desc=self.name, unit="steps")

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if self.bar is None:
            return
        figures = {name.rsplit("/", 1)[-1] if name.startswith("train/") else name: value
                   for name, value in trainer.progress_bar_metrics.items()}  # fmt: skip
        # The figures first, so the update that draws the bar (or writes a line) shows this step's.
        self.bar.set_postfix({name: f"{value:.3g}" for name, value in figures.items()}, refresh=False)
        self.bar.update(trainer.global_step - self.bar.n)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
