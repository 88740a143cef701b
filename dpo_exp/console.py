"""What a run shows on the console: a line per stage, progress bars for long steps, the result block.

Everything the project says goes through the `dpo_exp` logger, whose level Hydra's logging config
sets from `verbosity` (conf/hydra/job_logging/dpo_exp.yaml): `quiet` keeps warnings and the result
block, `normal` adds a line per stage and the progress bars, `verbose` adds details (the data
report) and lets the libraries speak. Bars are drawn only when the stage lines are shown, and
only by the first process of a distributed run.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Iterable
from typing import Any

from tqdm import tqdm

log = logging.getLogger("dpo_exp")
result_log = logging.getLogger("dpo_exp.result")

# verbosity -> (level of the project's own lines, level of the libraries' loggers)
VERBOSITY = {"quiet": ("WARNING", "WARNING"), "normal": ("INFO", "WARNING"), "verbose": ("DEBUG", "INFO")}

# Warnings about what this project does on purpose: shown at no verbosity.
ON_PURPOSE = (
    r"Found \d+ module\(s\) in eval mode",  # the frozen reference, kept in eval mode
    r"Experiment logs directory .* exists and is not empty",  # the run folder holds the CSV logger's files
)
# Library notices a user can do nothing about: shown with verbosity=verbose only.
LIBRARY_NOTICES = (r"`isinstance\(treespec, LeafSpec\)` is deprecated",)  # inside Lightning


def levels(verbosity: str, which: int) -> str:
    if verbosity not in VERBOSITY:
        raise ValueError(f"verbosity must be one of {', '.join(VERBOSITY)}, got {verbosity!r}")
    return VERBOSITY[verbosity][which]


def project_level(verbosity: str) -> str:
    """The `dpo_exp` logger's level at this verbosity (for Hydra's logging config)."""
    return levels(verbosity, 0)


def library_level(verbosity: str) -> str:
    """The level of the libraries' loggers at this verbosity (for Hydra's logging config)."""
    return levels(verbosity, 1)


def is_main_process() -> bool:
    """False in the worker processes of a distributed run, which stay silent."""
    return all(os.environ.get(name, "0") == "0" for name in ("RANK", "LOCAL_RANK", "NODE_RANK"))


def stage(name: str, message: str) -> None:
    """One line for a stage: `[name] message`."""
    if is_main_process():
        log.info("%-10s %s", f"[{name}]", message)


def detail(message: str) -> None:
    """What only verbosity=verbose shows (the data report's tables)."""
    if is_main_process():
        log.debug(message)


def warn(message: str) -> None:
    log.warning("warning: %s", message)


def result(text: str) -> None:
    """The result block: shown at every verbosity, and kept in the run's log file."""
    if is_main_process():
        result_log.info(text)


def bars_shown() -> bool:
    return log.isEnabledFor(logging.INFO) and is_main_process()


def progress(
    iterable: Iterable[Any] | None = None,
    *,
    total: float | None = None,
    desc: str,
    unit: str = "it",
    initial: float = 0,
) -> tqdm:
    """A progress bar that disappears when done (the stage line stays), or a silent stand-in.

    On a terminal it redraws ten times a second; in a log file (no terminal) every 30 s, so a
    batch job's log keeps a few lines of progress rather than thousands.
    """
    terminal = sys.stderr.isatty()
    return tqdm(
        iterable,
        total=total,
        initial=initial,
        desc=f"{desc:>10}",
        unit=unit,
        leave=False,
        disable=not bars_shown(),
        dynamic_ncols=True,
        mininterval=0.1 if terminal else 30.0,
        bar_format="{desc} {percentage:3.0f}%|{bar:24}| {n:.0f}/{total:.0f} {unit} "
        "[{elapsed}<{remaining}]{postfix}",
    )


def quiet_libraries() -> None:
    """Keep the libraries' own bars and notices off the console, unless verbosity=verbose.

    Their loggers' levels are set by the logging config; these are the parts that are not logging.
    """
    for message in ON_PURPOSE:
        warnings.filterwarnings("ignore", message=message)
    if log.isEnabledFor(logging.DEBUG):
        return
    for message in LIBRARY_NOTICES:
        warnings.filterwarnings("ignore", message=message)
    import datasets
    import transformers

    transformers.utils.logging.disable_progress_bar()  # loading weights, writing shards
    datasets.disable_progress_bars()  # "Generating train split"
