"""Stopping a run on SIGINT (Ctrl-C) or SIGTERM: at the end of the step under way, with a checkpoint.

Lightning stops on SIGTERM at the end of a step (and passes it on to the ranks it started); on
SIGINT it raises KeyboardInterrupt wherever the loop is and exits with status 1. While a run
trains, SIGINT is sent on as SIGTERM, so both stop the same way; `StopCheckpoint` then writes the
step's checkpoint before Lightning raises, and the entry reads `stop_signal()` for the exit status.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from types import FrameType
from typing import Any

import lightning as L

# The signal that stopped the run in this process, for the entry's message and exit status.
_RECEIVED: list[signal.Signals] = []


def stop_signal() -> signal.Signals:
    """The signal that stopped this process's run: SIGINT when Ctrl-C sent it on, else SIGTERM."""
    return _RECEIVED[-1] if _RECEIVED else signal.SIGTERM


def _interrupt_as_terminate(signum: int, frame: FrameType | None) -> None:
    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, signal.SIG_IGN, None):
        raise KeyboardInterrupt  # Lightning's handler is not in place (before or after the loop)
    _RECEIVED.append(signal.SIGINT)
    os.kill(os.getpid(), signal.SIGTERM)


@contextlib.contextmanager
def interrupt_as_terminate() -> Iterator[None]:
    """SIGINT handled as SIGTERM for the duration (in the main thread; elsewhere as it was)."""
    _RECEIVED.clear()
    try:
        previous = signal.signal(signal.SIGINT, _interrupt_as_terminate)
    except ValueError:  # not the main thread: signals cannot be handled here
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class StopCheckpoint(L.Callback):
    """Saves the step's checkpoint when a stop signal arrived during it (through `checkpoint`'s own
    saving: digests, keep_last); Lightning then stops at the end of the step."""

    def __init__(self, checkpoint: Any) -> None:
        self.checkpoint = checkpoint  # a `checkpoints.DigestedCheckpoint`

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args: Any) -> None:
        stopping = trainer.received_sigterm
        if trainer.world_size > 1:
            # Saving is collective, and so is the loop's next step: every rank stops at this step
            # if any received the signal (each may have noticed it in another step).
            stopping = trainer.strategy.reduce_boolean_decision(stopping, all=False)
            if stopping:
                trainer._signal_connector.received_sigterm = True
        # Between the batches of one accumulated step the loop's state is mid-step: not a checkpoint.
        if not stopping or trainer.fit_loop.epoch_loop._should_accumulate():
            return
        if self.checkpoint._last_global_step_saved != trainer.global_step:
            self.checkpoint.save_now(trainer)
