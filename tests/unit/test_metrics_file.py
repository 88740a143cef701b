"""metrics.csv: whole after every save, even one a kill interrupts; a torn row is never read."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd
import pytest

from dpo_exp.training.metrics_file import METRICS, MetricsLogger, read_metrics


class Killed(BaseException):
    """Stands in for SIGKILL at the instant it is raised: nothing after it runs."""


def test_every_save_writes_the_whole_table_with_a_line_end_after_each_row(tmp_path: Path):
    logger = MetricsLogger(tmp_path)
    logger.log_metrics({"train/loss": 0.7}, step=0)
    logger.log_metrics({"train/loss": 0.6}, step=1)
    logger.save()
    assert (tmp_path / METRICS).read_text() == "step,train/loss\n0,0.7\n1,0.6\n"
    # A metric first logged later widens the header; the earlier rows are kept, its cells empty.
    logger.log_metrics({"train/loss": 0.5, "val/loss": 0.55}, step=2)
    logger.save()
    assert (tmp_path / METRICS).read_text() == "step,train/loss,val/loss\n0,0.7,\n1,0.6,\n2,0.5,0.55\n"


class HalfWritten:
    """A file whose writer is killed halfway through its first write."""

    def __init__(self, stream) -> None:
        self.stream = stream

    def __enter__(self) -> HalfWritten:
        return self

    def __exit__(self, *exc) -> None:
        self.stream.close()

    def write(self, data: bytes) -> None:
        self.stream.write(data[: len(data) // 2])
        self.stream.flush()  # half of it on disk
        raise Killed


def test_a_save_killed_midway_leaves_the_previous_file_whole(tmp_path: Path, monkeypatch):
    logger = MetricsLogger(tmp_path)
    logger.log_metrics({"train/loss": 0.7}, step=0)
    logger.save()
    before = (tmp_path / METRICS).read_text()
    real_fdopen = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda fd, mode: HalfWritten(real_fdopen(fd, mode)))
    logger.log_metrics({"train/loss": 0.6, "val/loss": 0.65}, step=1)  # a new header: a full rewrite
    with pytest.raises(Killed):
        logger.save()
    monkeypatch.undo()
    assert (tmp_path / METRICS).read_text() == before  # Lightning's truncates it, then rewrites


def test_a_torn_last_row_is_left_out_and_the_reader_says_so(tmp_path: Path, caplog):
    path = tmp_path / METRICS
    path.write_text("step,train/loss\n0,0.7\n1,0.6\n2,0.5")  # killed while writing step 2's row
    with caplog.at_level(logging.WARNING, logger="dpo_exp"):
        table = read_metrics(path)
    assert table["step"].tolist() == [0, 1] and table["train/loss"].tolist() == [0.7, 0.6]
    assert f"{path}: left out its last row, cut short" in caplog.text


def test_a_whole_file_is_read_as_it_is_without_a_warning(tmp_path: Path, caplog):
    path = tmp_path / METRICS
    pd.DataFrame({"step": [0, 1], "train/loss": [0.7, 0.6]}).to_csv(path, index=False)
    with caplog.at_level(logging.WARNING, logger="dpo_exp"):
        assert read_metrics(path)["train/loss"].tolist() == [0.7, 0.6]
    assert caplog.text == ""
    path.write_text("step,tra")  # killed before the header was whole
    assert read_metrics(path).empty
