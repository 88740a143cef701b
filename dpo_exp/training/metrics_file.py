"""metrics.csv, every logged metric by step: written whole at each save, read back without a row a
kill cut short.

Lightning's CSV logger appends rows to the file, and rewrites it in place whenever a new metric
appears (the first validation at step 50): a kill in the middle leaves a torn last row, or a file
cut anywhere. This writer writes the whole table under a temporary name and renames it into place,
so metrics.csv always holds every row of its last save, each complete. A file from elsewhere (an
earlier version, a copy cut short) is read without a last line that has no line end, and the
reader says it left that line out.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from dpo_exp.console import warn
from dpo_exp.storage import write_text_atomically

METRICS = "metrics.csv"


class WholeFileWriter(ExperimentWriter):
    """Lightning's experiment writer (hparams.yaml, metrics.csv), its metrics rewritten whole."""

    def __init__(self, log_dir: str, earlier: Sequence[dict[str, Any]] = ()) -> None:
        super().__init__(log_dir)  # removes a metrics.csv already there, as Lightning's does
        self.saved: list[dict[str, Any]] = list(earlier)  # every row written so far
        self.metrics_keys = sorted({key for row in earlier for key in row})

    def save(self) -> None:
        """Every row logged so far, as metrics.csv, written whole (storage.write_text_atomically)."""
        if not self.metrics:
            return
        self._record_new_keys()  # the header: every metric name logged so far, sorted
        self.saved += self.metrics
        self.metrics = []
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.metrics_keys, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.saved)
        write_text_atomically(Path(self.metrics_file_path), buffer.getvalue())


class MetricsLogger(CSVLogger):
    """Lightning's CSV logger writing straight into `save_dir` (no version folders), whole files,
    starting with the `earlier` rows (of the run a resumed run continues)."""

    def __init__(self, save_dir: str | Path, earlier: Sequence[dict[str, Any]] = ()) -> None:
        super().__init__(save_dir=save_dir, name="", version="")
        self.earlier = list(earlier)

    @property
    @rank_zero_experiment
    def experiment(self) -> WholeFileWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = WholeFileWriter(log_dir=self.log_dir, earlier=self.earlier)
        return self._experiment


def whole_lines(text: str) -> tuple[str, bool]:
    """(`text` up to its last line end, whether a last line without one was left out)."""
    end = text.rfind("\n") + 1
    return text[:end], end < len(text)


def read_metrics(path: Path) -> pd.DataFrame:
    """A metrics.csv as a table; a torn last row (no line end: its run stopped while writing it) is
    left out, with a warning naming the file. An empty file is an empty table."""
    text, torn = whole_lines(path.read_text())
    if torn:
        warn(f"{path}: left out its last row, cut short (no line end: the run stopped while writing it)")
    return pd.read_csv(io.StringIO(text)) if text.strip() else pd.DataFrame()
