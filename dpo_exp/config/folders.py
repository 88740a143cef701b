"""The folder a launch writes into, checked before Hydra writes anything there.

Hydra makes the run folder and writes its record of the command (`.hydra/`, the log) before the
run starts. So a folder that cannot be made or written fails inside Hydra, as a traceback, before
the entry can turn it into a message; and a relaunch into a finished run's folder would already
have changed that folder by the time the run refused it. A Hydra callback runs before both.
"""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, read_write

from dpo_exp.console import is_main_process
from dpo_exp.errors import ConfigError, WriteError
from dpo_exp.training.resume import refuse_finished_folder
from dpo_exp.world import cluster_environment, launcher_name


def point_hydra_at(run_dir: Path) -> None:
    """Make `run_dir` the run folder Hydra reports, which Lightning's launcher gives the processes
    it starts for the other ranks (as `hydra.run.dir`)."""
    hydra_cfg = HydraConfig.get()
    OmegaConf.set_readonly(hydra_cfg, False)
    hydra_cfg.run.dir = str(run_dir)
    OmegaConf.set_readonly(hydra_cfg, True)


def move_log_files(old: Path, new: Path) -> None:
    """The log files Hydra opened in `old` (run.log) continue, appended to, in `new`."""
    handlers = [logging.getLogger().handlers] + [
        logger.handlers
        for logger in logging.Logger.manager.loggerDict.values()
        if isinstance(logger, logging.Logger)
    ]
    for handler in {handler for group in handlers for handler in group}:
        if not isinstance(handler, logging.FileHandler) or Path(handler.baseFilename).parent != old.resolve():
            continue
        handler.acquire()
        try:
            handler.close()
            moved = new / Path(handler.baseFilename).name
            written = Path(handler.baseFilename)
            with moved.open("a") as stream:  # the lines of this launch so far
                stream.write(written.read_text() if written.exists() else "")
            handler.baseFilename, handler.mode = str(moved.resolve()), "a"
            handler.stream = handler._open()
        finally:
            handler.release()


class OutputFolder(Callback):
    """Refuse, as one line, a run folder that holds a finished run or that cannot be written."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if cluster_environment() is not None and not is_main_process():  # Lightning's ranks: set by it
            keep_out_of_the_record(config)
        folder = selected_folder(config, "hydra.run.dir")
        if folder is None:
            return
        try:
            refuse_finished_folder(folder)
        except ConfigError as error:
            raise SystemExit(str(error)) from None
        check_writable(folder)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        refuse_sweep_per_rank()
        folder = selected_folder(config, "hydra.sweep.dir")
        if folder is not None:
            check_writable(folder)


def refuse_sweep_per_rank() -> None:
    """A multirun started by torchrun or srun on several ranks would be run whole by every rank,
    each in a sweep folder of its own: refused, pointing to the launcher that runs members as jobs."""
    environment = cluster_environment()
    if environment is not None and environment.world_size() > 1:
        raise SystemExit(
            f"-m under {launcher_name(environment)} ({environment.world_size()} processes): every rank "
            "would run the whole sweep; start a sweep from one process, and give its members their own "
            "launch (hydra/launcher=slurm with --config-dir sweeps submits each member as a SLURM job)"
        )


def keep_out_of_the_record(config: DictConfig) -> None:
    """A rank > 0 of a cluster launch shares rank 0's folder, and Hydra's record of the command
    there (`.hydra/`) is rank 0's, as with the ranks Lightning starts itself."""
    with read_write(config.hydra):
        config.hydra.output_subdir = None


def selected_folder(config: DictConfig, key: str) -> Path | None:
    """The folder `key` names, or None when it does not resolve (Hydra then reports why itself)."""
    try:
        return Path(str(OmegaConf.select(config, key)))
    except Exception:  # noqa: BLE001 - a bad interpolation: Hydra's own message names it
        return None


def check_writable(folder: Path) -> None:
    """Make `folder`; stop with one line naming it when it cannot be made or written.

    Hydra's callbacks may not raise an Exception (Hydra turns it into a warning and goes on), so
    this ends the launch with SystemExit and the message. With HYDRA_FULL_ERROR=1 it steps aside,
    and Hydra's own attempt fails with the full traceback.
    """
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise SystemExit(str(WriteError(folder, error))) from None
    # An existing folder on a read-only mount is "made" without error; only writing it would fail.
    if not os.access(folder, os.W_OK):
        code = errno.EROFS if os.statvfs(folder).f_flag & os.ST_RDONLY else errno.EACCES
        raise SystemExit(str(WriteError(folder, OSError(code, os.strerror(code)))))
