"""Stopping a run on SIGINT (Ctrl-C) or SIGTERM: at the end of the step under way, with its checkpoint.

Lightning on its own stops on SIGTERM at the end of the step or validation under way (no checkpoint
of it), and on SIGINT raises KeyboardInterrupt wherever the loop is, then exits with status 1.
Here, once training has started, both signals are noted and the run goes on to the end of the step
(and of a validation under way): `StopCheckpoint` saves that step's checkpoint, then hands the stop
to Lightning's SIGTERM handler, which ends the loop (and the ranks it started) with SIGTERMException.
The entry reads `stop_signal()` for its message and exit status.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

import lightning as L
from lightning.pytorch.utilities.exceptions import SIGTERMException

# The signals received in this process since its run began training (the last one stopped it).
_RECEIVED: list[signal.Signals] = []
# Whether a StopCheckpoint is watching (training has started): then a signal waits for the step's end.
_ARMED: list[bool] = [False]


def stop_signal() -> signal.Signals:
    """The signal that stopped this process's run (SIGTERM when none was noted here)."""
    return _RECEIVED[-1] if _RECEIVED else signal.SIGTERM


def _note(signum: int, frame: FrameType | None) -> None:
    _RECEIVED.append(signal.Signals(signum))
    if not _ARMED[0]:  # before training started: nothing to save, stop now
        raise SIGTERMException


@contextlib.contextmanager
def interrupt_as_terminate() -> Iterator[None]:
    """SIGINT handled as SIGTERM while a run fits (in the main thread; elsewhere as it was)."""
    _RECEIVED.clear()
    try:
        previous = signal.signal(signal.SIGINT, _note)
    except ValueError:  # not the main thread: signals cannot be handled here
        yield
        return
    try:
        yield
    finally:
        _ARMED[0] = False
        signal.signal(signal.SIGINT, previous)


class StopCheckpoint(L.Callback):
    """Notes SIGTERM and SIGINT once training starts; at the end of the step under way saves its
    checkpoint (through `checkpoint`'s own saving: digests, keep_last) and lets Lightning stop."""

    def __init__(self, checkpoint: Any) -> None:
        self.checkpoint = checkpoint  # a `checkpoints.DigestedCheckpoint`
        self.lightning_handler: Callable[[int, FrameType | None], Any] | int | None = None

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        # Lightning's handler, registered as the fit began, is called once the checkpoint is saved;
        # it puts back the handler from before the fit when the fit ends.
        self.lightning_handler = signal.getsignal(signal.SIGTERM)
        with contextlib.suppress(ValueError):  # not the main thread: Lightning's handling stays
            signal.signal(signal.SIGTERM, _note)
            _ARMED[0] = True

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args: Any) -> None:
        # Between the batches of an accumulated step the loop is mid-step: not a state to save.
        if not _ARMED[0] or trainer.fit_loop.epoch_loop._should_accumulate():
            return
        stopping = bool(_RECEIVED)
        if trainer.world_size > 1:  # saving is collective: every rank stops at the step any noted it
            stopping = trainer.strategy.reduce_boolean_decision(stopping, all=False)
        if not stopping:
            return
        if self.checkpoint._last_global_step_saved != trainer.global_step:
            self.checkpoint.save_now(trainer)
        _ARMED[0] = False
        if callable(self.lightning_handler):
            self.lightning_handler(signal.SIGTERM, None)  # Lightning stops at the end of this step
        else:
            trainer._signal_connector.received_sigterm = True  # how Lightning's handler says it
