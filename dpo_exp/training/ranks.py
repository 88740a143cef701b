"""Which rank of a distributed run was lost, when a peer's process dies mid-run.

A rank killed outright (SIGKILL, the out-of-memory killer) says nothing; its peers only see their
next collective fail, with gloo's "Connection reset by peer" and an address whose port says
nothing of whose it was. So every rank learns each peer's host and process id when the run
starts (one all-gather, nothing written to the run folder), and on an error looks the peers on its
host up in the process table: a death is a fact there, with no timing to guess, where a heartbeat
file would need a staleness threshold. Ranks on other hosts cannot be looked up from here; a run
that loses one of those keeps its traceback.

Lightning's launching rank also watches the ranks it started, and SIGKILLs itself a moment (its
5 s poll) after one of them dies, to never hang on it: that races this report and usually wins on
a loaded machine, leaving neither the message nor failed.txt. `PatientLauncher` keeps that watch
but gives the launching rank `REPORT_S` to fail on its own first.
"""

from __future__ import annotations

import os
import re
import socket
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.strategies.launchers.subprocess_script import _ChildProcessObserver
from lightning.pytorch.strategies.launchers.subprocess_script import (
    _set_num_threads_if_needed,
    _SubprocessScriptLauncher,
)

from dpo_exp.errors import UserError

# How long a rank whose collective failed waits for the peer that broke it to be gone: a peer
# that stopped on its own error closes its connections (ending its process group) a moment
# before its process ends.
GRACE_S = 5.0
COMMUNICATION = re.compile(r"gloo|nccl|connection|peer", re.IGNORECASE)
# How long the launching rank has, after a rank it started died, to stop on its own error before
# Lightning's watch kills it: the lookup above (up to GRACE_S), failed.txt, closing W&B.
REPORT_S = 20.0


class LostRankError(UserError):
    """A peer rank's process ended mid-run; this rank's own error was only the consequence."""


class RankWatch(L.Callback):
    """Knows every rank's host and process id, to name the ones whose process is gone."""

    def __init__(self) -> None:
        self.rank = 0
        self.peers: list[tuple[str, int]] = []  # (host, pid) by global rank; empty in a single process

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        if self.peers or not distributed or trainer.world_size < 2:
            return
        self.rank = trainer.global_rank
        gathered: list[tuple[str, int] | None] = [None] * trainer.world_size
        torch.distributed.all_gather_object(gathered, (socket.gethostname(), os.getpid()))
        self.peers = [peer for peer in gathered if peer is not None]

    def lost_ranks(self, error: BaseException) -> LostRankError | None:
        """The error to report instead of `error` when a peer's process is gone, else None."""
        if not self.peers or not isinstance(error, Exception) or isinstance(error, UserError):
            return None  # a signal, an interrupt or a message of its own: not a peer's death
        deadline = time.monotonic() + (GRACE_S if COMMUNICATION.search(str(error)) else 0.0)
        while not (gone := self.gone()) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not gone:
            return None
        names = ", ".join(str(rank) for rank in gone)
        subject = f"rank {names} of {len(self.peers)} stopped (its process died or was killed)"
        if len(gone) > 1:
            subject = f"ranks {names} of {len(self.peers)} stopped (their processes died or were killed)"
        return LostRankError(f"{subject}; this run failed: resume it with resume=auto")

    def gone(self) -> list[int]:
        host = socket.gethostname()
        return [
            rank
            for rank, (peer_host, pid) in enumerate(self.peers)
            if rank != self.rank and peer_host == host and not process_alive(pid)
        ]


def process_alive(pid: int) -> bool:
    """Whether process `pid` is running: not gone, and not a zombie (dead, not yet reaped: a
    killed worker stays one until the launching rank, its parent, waits for it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (not Linux): the signal reached a process
    state = stat.rpartition(")")[2].split()[0]  # the field after the command name, which may hold spaces
    return state not in ("Z", "X")


class PatientObserver(_ChildProcessObserver):
    """Lightning's watch on the launched ranks, killing the launching one only after `REPORT_S`."""

    def _terminate_all(self) -> None:
        time.sleep(REPORT_S)  # a daemon thread: a launching rank that exits meanwhile ends it
        super()._terminate_all()


class PatientLauncher(_SubprocessScriptLauncher):
    """Lightning's launcher of ranks by re-running the command line, with `PatientObserver`."""

    def launch(self, function: Any, *args: Any, trainer: L.Trainer | None = None, **kwargs: Any) -> Any:
        self.cluster_environment.validate_settings(num_devices=self.num_processes, num_nodes=self.num_nodes)
        if not self.cluster_environment.creates_processes_externally:
            self._call_children_scripts()
            PatientObserver(child_processes=self.procs, main_pid=os.getpid()).start()
        _set_num_threads_if_needed(num_processes=self.num_processes)
        return function(*args, **kwargs)


def launch_patiently(trainer: L.Trainer) -> None:
    """Swap Lightning's launcher of ranks for `PatientLauncher`, where the strategy uses it."""
    launcher = trainer.strategy.launcher
    if type(launcher) is _SubprocessScriptLauncher:  # Lightning offers no setter for its launcher
        trainer.strategy._launcher = PatientLauncher(  # noqa: SLF001
            launcher.cluster_environment, launcher.num_processes, launcher.num_nodes
        )
