"""A validation before the first step, logged at step 0: every curve starts from the initial policy.

Lightning's sanity check (`num_sanity_val_steps`) runs a few batches and logs nothing; this runs the
whole validation loop, as the fit loop runs it every `val_check_interval` steps, once when a run
starts afresh (a resumed run has its step-0 figures already).
"""

from __future__ import annotations

import lightning as L


class ValidationAtStart(L.Callback):
    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.global_step != 0:
            return
        # As the training epoch loop runs a validation between steps (its `on_advance_end`).
        connector = trainer._logger_connector
        first_loop_iter = connector._first_loop_iter
        trainer.validating = True
        trainer.fit_loop.epoch_loop.val_loop.run()
        trainer.training = True
        connector._first_loop_iter = first_loop_iter
