"""What a run shows on the console: a line per stage, progress bars for long steps, the result block.

Everything the project says goes through the `dpo_exp` logger, whose level Hydra's logging config
sets from `verbosity` (conf/hydra/job_logging/dpo_exp.yaml): `quiet` keeps warnings and the result
block, `normal` adds a line per stage and the progress bars, `verbose` adds details (the data
report) and lets the libraries speak. Bars are drawn only when the stage lines are shown, and
only by the first process of a distributed run; where stderr is not a terminal, progress is a few
plain lines instead.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sized
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
    """Whether this process is global rank 0: the one that speaks and writes the run folder. Other
    ranks, started by Lightning, torchrun or srun, each have one of these variables above 0."""
    ranks = ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID")
    return all(os.environ.get(name, "0") == "0" for name in ranks)


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
) -> tqdm | ProgressLines:
    """A progress bar that disappears when done (the stage line stays), or a silent stand-in.

    On a terminal a bar redraws ten times a second. Elsewhere (a log file, CI, a batch job) its
    frames, each drawn over the last with a carriage return, would pile up as one garbled line, so
    progress is written as a few plain lines instead (`ProgressLines`).
    """
    if not sys.stderr.isatty():
        return ProgressLines(
            iterable, total=total, initial=initial, desc=desc, unit=unit, disable=not bars_shown()
        )
    return tqdm(
        iterable,
        total=total,
        initial=initial,
        desc=f"{desc:>10}",
        unit=unit,
        leave=False,
        disable=not bars_shown(),
        dynamic_ncols=True,
        mininterval=0.1,
        bar_format="{desc} {percentage:3.0f}%|{bar:24}| {n:.0f}/{total:.0f} {unit} "
        "[{elapsed}<{remaining}]{postfix}",
    )


class ProgressLines:
    """What a bar counts, as a plain line on stderr when another tenth is done or `every_s` seconds
    have passed since the last line, and at the end: `train 150/300 steps (50%) in 62 s, loss=0.42`.

    Has the part of tqdm's interface the project uses: iteration, `update`, `n`, `total`,
    `set_postfix`, `postfix`, `close`, `disable`, and use as a context manager.
    """

    def __init__(
        self,
        iterable: Iterable[Any] | None = None,
        *,
        total: float | None,
        desc: str,
        unit: str,
        initial: float = 0,
        disable: bool = False,
        every_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if total is None and isinstance(iterable, Sized):
            total = len(iterable)
        self.iterable, self.total, self.desc, self.unit, self.disable = iterable, total, desc, unit, disable
        self.n = self.shown = initial  # counted; counted when the last line was written
        self.postfix = ""
        self.closed = False
        self.every_s, self.clock = every_s, clock
        self.started = self.shown_at = clock()

    def __iter__(self) -> Iterator[Any]:
        try:
            for item in self.iterable or ():
                yield item
                self.update()
        finally:
            self.close()

    def __enter__(self) -> ProgressLines:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: float = 1) -> None:
        self.n += n
        if not (self.disable or self.closed) and (
            self.clock() - self.shown_at >= self.every_s or self.tenths(self.n) > self.tenths(self.shown)
        ):
            self.show()

    def tenths(self, count: float) -> int:
        return int(10 * count / self.total) if self.total else 0

    def set_postfix(
        self, ordered_dict: dict[str, Any] | None = None, refresh: bool = True, **kwargs: Any
    ) -> None:
        """The figures shown after the count, as tqdm shows them (`loss=0.42, val/loss=0.5`)."""
        self.postfix = ", ".join(
            f"{name}={value}" for name, value in {**(ordered_dict or {}), **kwargs}.items()
        )

    def show(self) -> None:
        count = f"{self.n:.0f}/{self.total:.0f} {self.unit}" if self.total else f"{self.n:.0f} {self.unit}"
        percent = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        line = f"{self.desc.strip()} {count}{percent} in {self.clock() - self.started:.0f} s"
        print(line + (f", {self.postfix}" if self.postfix else ""), file=sys.stderr, flush=True)
        self.shown, self.shown_at = self.n, self.clock()

    def close(self) -> None:
        """The last count, unless a line already showed it."""
        if not (self.disable or self.closed) and self.n != self.shown:
            self.show()
        self.closed = True


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
