"""What a run says about its data at normal verbosity: validation cut from the training file, a
capped val_size, validation rows that are training rows."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import OmegaConf

from dpo_exp.data.module import prepare_data
from dpo_exp.models.tokenizer import build_char_tokenizer


def data_cfg(train: Path, validation: Path | None = None, val_size: int = 2):
    return OmegaConf.create(
        {
            "name": "pairs", "source": "pairs", "dataset": None, "train_path": str(train),
            "validation_path": None if validation is None else str(validation), "options": {},
            "val_size": val_size, "split_seed": 0, "max_length": 64, "max_prompt_length": 32,
        }
    )  # fmt: skip


def write_pairs(path: Path, count: int, start: int = 0) -> Path:
    rows = [
        {"prompt": f"q{i}", "chosen": f"yes {i}", "rejected": f"no {i}"} for i in range(start, start + count)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_validation_cut_from_the_training_file_is_said(tmp_path):
    train = write_pairs(tmp_path / "train.jsonl", 10)
    data = prepare_data(data_cfg(train), build_char_tokenizer(), paired=True)
    assert data.notes == [
        f"validation: 2 rows cut from the training data ({train}), drawn with data.split_seed=0; "
        "training keeps 8"
    ]
    assert data.warnings == []


def test_a_capped_val_size_is_a_warning_naming_the_requested_and_the_used_size(tmp_path):
    train = write_pairs(tmp_path / "train.jsonl", 10)
    data = prepare_data(data_cfg(train, val_size=64), build_char_tokenizer(), paired=True)
    assert len(data.validation.items) == 5
    assert data.warnings == [
        "data.val_size=64: 5 validation rows used, at most half of the 10 rows read "
        "(lower data.val_size, or give a validation file)"
    ]


def test_validation_rows_that_are_training_rows_are_a_warning(tmp_path):
    train = write_pairs(tmp_path / "train.jsonl", 10)
    validation = write_pairs(tmp_path / "val.jsonl", 4, start=8)  # rows 8 and 9 are training rows
    data = prepare_data(data_cfg(train, validation), build_char_tokenizer(), paired=True)
    assert data.notes == []
    assert data.warnings == [
        "validation data: 2 of 4 rows are identical to a training row: their figures measure training data"
    ]


def test_the_run_says_them_at_normal_verbosity(tmp_path, caplog):
    """Shown by the run's console at `verbosity=normal` (INFO), not only in the verbose report."""
    from dpo_exp.training.run import assemble_run
    from tests.helpers import FAST_MODEL, compose_config

    train = write_pairs(tmp_path / "train.jsonl", 40)
    validation = write_pairs(tmp_path / "val.jsonl", 4, start=38)
    overrides = ["data=pairs", f"data.train_path={train}", f"data.validation_path={validation}", *FAST_MODEL]
    with caplog.at_level(logging.INFO):
        assemble_run(compose_config(overrides, fast=False))
    said = [record for record in caplog.records if "identical to a training row" in record.getMessage()]
    assert said and said[0].levelno == logging.WARNING
