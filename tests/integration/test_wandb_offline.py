"""`logger=wandb` offline: the run's own `.wandb` file, read back record by record, holds the config
as columns, the metric history, the summary.json figures as the W&B summary, and the sample table."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from hydra.core.hydra_config import HydraConfig
from wandb.proto.wandb_internal_pb2 import Record

from dpo_exp.cli import run
from dpo_exp.config.schema import EXPERIMENT_SECTIONS
from dpo_exp.training.wandb_run import (
    BEST_VALUES,
    EXPERIMENT_KEYS,
    SWEPT_KEYS,
    RunWandbLogger,
    flatten,
    sweep_name,
    wandb_config,
    wandb_group,
    wandb_tags,
)
from tests.helpers import SMALL_EXPERIMENT, compose_config
from tests.integration.test_sweep_configs import compose_sweep

BLOCK, HEADER = 32768, 7


def wandb_records(path: Path) -> Iterator[Record]:
    """The records of a `.wandb` file, parsed with wandb's own protobuf schema.

    wandb 0.31 ships no Python reader of the file (its `datastore` module went with the Python
    backend); the framing is LevelDB's log format, which wandb-core writes: a 7-byte file header
    (":W&B", magic 0xBEE1, version 0), then 32 KiB blocks of chunks, each `crc32 (4) | length (2) |
    type (1) | data`, where type 1 is a whole record and 2, 3, 4 its first, middle and last parts.
    """
    data = path.read_bytes()
    assert struct.unpack("<4sHB", data[:HEADER]) == (b":W&B", 0xBEE1, 0)
    position, pending = HEADER, b""
    while position + HEADER <= len(data):
        if BLOCK - position % BLOCK < HEADER:  # a block's tail too short for a chunk header is padding
            position += BLOCK - position % BLOCK
            continue
        checksum, length, kind = struct.unpack("<IHB", data[position : position + HEADER])
        if kind == 0:
            break
        chunk = data[position + HEADER : position + HEADER + length]
        assert zlib.crc32(chunk, zlib.crc32(bytes([kind]))) == checksum, "corrupt chunk"
        position += HEADER + length
        pending += chunk
        if kind in (1, 4):  # a whole record, or the last part of one
            record = Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def finished_records(path: Path, wait_s: float = 30.0) -> list[Record]:
    """The file's records once they end with the run's exit record. wandb-core writes the file from
    its own process; once, in a loaded full test run, it was read here before any record was on
    disk. Waits at most `wait_s`: a file that never gets its exit record still fails the test."""
    deadline = time.monotonic() + wait_s
    while True:
        records = list(wandb_records(path))
        if (
            any(record.WhichOneof("record_type") == "exit" for record in records)
            or time.monotonic() > deadline
        ):
            return records
        time.sleep(0.5)


def items(entries) -> dict[str, object]:
    """Config, history or summary entries as {"a/b": value}: `key`, or `nested_key` joined by '.'."""
    return {item.key or ".".join(item.nested_key): json.loads(item.value_json) for item in entries}


@pytest.mark.slow
def test_an_offline_wandb_run_holds_the_config_history_summary_and_sample_table(tmp_path: Path):
    run_dir = tmp_path / "run"
    cfg = compose_config([*SMALL_EXPERIMENT, "logger=wandb", f"cache_dir={tmp_path / 'cache'}"], fast=False)
    summary = run(cfg, run_dir)

    (run_file,) = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    assert summary["wandb_run_dir"] == str(run_file.parent)
    records = finished_records(run_file)
    kinds = [record.WhichOneof("record_type") for record in records]
    assert kinds[0] == "header" and "exit" in kinds

    (start,) = [record.run for record in records if record.HasField("run")]
    assert start.display_name == cfg.run_name
    config = items(start.config.update)
    for record in records:
        if record.HasField("config"):
            config.update(items(record.config.update))
    assert config["loss.name"] == "dpo" and config["beta"] == 2.0 and config["sft.steps"] == 30

    history = [items(record.history.item) for record in records if record.HasField("history")]
    csv = pd.read_csv(run_dir / "metrics.csv")
    logged = [row["train/loss"] for row in history if "train/loss" in row]
    assert logged == pytest.approx(csv["train/loss"].dropna().tolist())  # the same curve as the CSV
    assert len(logged) == cfg.trainer.max_steps

    tables = [row for row in history if row.get("eval/samples._type") == "table-file"]
    assert tables, "no sample table was logged"
    table = json.loads((run_file.parent / "files" / tables[-1]["eval/samples.path"]).read_text())
    assert table["columns"] == [
        "prompt",
        "policy_sample",
        "policy_reward",
        "reference_sample",
        "reference_reward",
    ]
    assert len(table["data"]) == cfg.evaluate.table_size

    final = {}
    for record in records:
        if record.HasField("summary"):
            final.update(items(record.summary.update))
    for name, value in summary["metrics"].items():
        # A figure kept with its best value holds its last beside it.
        assert (final[name]["last"] if name in BEST_VALUES else final[name]) == pytest.approx(value), name
    assert set(final["eval/true_reward"]) == {"max", "last"}
    assert final["reference/eval/true_reward"] == pytest.approx(summary["reference"]["eval/true_reward"])
    assert final["tokens_per_s"] == pytest.approx(summary["tokens_per_s"])


def leet_summary(run_dir: Path) -> dict:
    """The run as wandb's own reader of offline runs shows it (the README's `wandb leet`)."""
    (folder,) = (run_dir / "wandb").glob("offline-run-*")
    for _ in range(60):  # wandb-core writes the file from its own process; wait for its exit record
        command = [sys.executable, "-m", "wandb", "leet", "inspect", "--summary", "--json", str(folder)]
        shown = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
        if shown["state"] == "finished":
            return shown
        time.sleep(0.5)
    raise AssertionError(f"the W&B run in {folder} never finished")


@pytest.mark.slow
def test_a_run_on_a_fixed_dataset_sends_the_settings_that_apply_once_each_and_its_best_values(
    tmp_path: Path,
):
    cfg = compose_config(["logger=wandb", "beta=0.3"])
    run(cfg, tmp_path / "run")
    shown = leet_summary(tmp_path / "run")

    # Only the config's settings, one column each: not the module's copies (`loss` beside
    # `loss.name`, `optim/lr` beside `optim.lr`), nor the built-in experiment's sections.
    assert set(shown["config"]) - {"_wandb"} == set(wandb_config(cfg))
    assert shown["config"]["loss.name"] == "dpo" and shown["config"]["beta"] == 0.3
    assert shown["tags"][:2] == ["loss:dpo", "beta:0.3"]

    summary = shown["summary"]
    losses = pd.read_csv(tmp_path / "run" / "metrics.csv")["val/loss"].dropna()
    assert summary["val/loss"] == pytest.approx({"min": losses.min(), "last": losses.iloc[-1]})
    assert set(summary["val/rewards/accuracy"]) == {"max", "last"}
    assert "train/loss" in summary  # the other figures as before


def test_only_the_settings_a_run_reads_are_columns():
    fixed = wandb_config(compose_config())
    assert "loss.name" in fixed and "optim.lr" in fixed and "beta" in fixed
    sections = {key.split(".")[0] for key in fixed}
    assert not sections & {"task", "sft", "sample", "evaluate", "online", "cache_dir"}
    assert not sections & {"logger", "run_name"}  # the run's own W&B fields
    assert "beta" not in wandb_config(compose_config(["loss=slic"]))  # a loss without β

    experiment = wandb_config(compose_config(SMALL_EXPERIMENT, fast=False))
    assert experiment["sft.steps"] == 30 and "task.splits.eval" in experiment


def test_settings_that_another_setting_switches_off_are_not_columns():
    fixed = wandb_config(compose_config())
    assert "optim.warmup_ratio" in fixed and "reference.cache" in fixed and "model.ref_path" in fixed
    assert "reference.cache_dir" not in fixed  # the reference cache is off
    assert "optim.master_weights" not in fixed  # fp32 weights: nothing to keep in fp32 beside them
    warmup_steps = wandb_config(compose_config(["optim.warmup_steps=5"]))
    assert warmup_steps["optim.warmup_steps"] == 5 and "optim.warmup_ratio" not in warmup_steps
    reference_free = wandb_config(compose_config(["loss=simpo"]))
    assert not {"reference.cache", "model.ref_path", "model.ref_dtype"} & set(reference_free)
    scored = wandb_config(compose_config(["evaluate.reward=dpo_exp.tasks.arithmetic:reward"]))
    assert scored["evaluate.reward"] == "dpo_exp.tasks.arithmetic:reward" and "evaluate.prompts" in scored


def test_the_experiment_sections_left_out_are_the_ones_validation_refuses_on_a_fixed_dataset():
    assert set(EXPERIMENT_KEYS) == set(EXPERIMENT_SECTIONS)


def test_tags_name_the_loss_and_beta_where_the_loss_has_one():
    assert wandb_tags(compose_config(["beta=0.3", "logger=wandb", "logger.tags=[mine]"])) == [
        "loss:dpo",
        "beta:0.3",
        "model:tiny",
        "data:synthetic",
        "mine",
    ]
    assert not [tag for tag in wandb_tags(compose_config(["loss=slic", "logger=wandb"])) if "beta" in tag]


@pytest.fixture
def hydra_multirun():
    """HydraConfig as a multirun member sees it, for the config named (set by the test)."""

    def enter(name: str) -> None:
        cfg = compose_sweep(name)
        HydraConfig.instance().set_config(cfg)

    yield enter
    HydraConfig.instance().cfg = None


def test_a_sweep_members_group_is_the_sweeps_name(hydra_multirun, monkeypatch):
    monkeypatch.setenv(SWEPT_KEYS, "loss,beta")
    hydra_multirun("beta_grid")
    assert wandb_group(None) == "beta_grid"
    assert wandb_group("mine") == "mine"


def test_a_command_line_sweep_is_named_by_the_keys_it_varies():
    assert sweep_name("config", ["loss", "beta"]) == "sweep_loss_beta"
    assert sweep_name("tune_dpo", ["beta", "optim.lr"]) == "tune_dpo"


def test_a_loss_option_chosen_at_the_start_replaces_auto_in_the_config(tmp_path: Path):
    logger = RunWandbLogger(save_dir=str(tmp_path), offline=True, config={"loss.desirable_weight": "auto"})
    logger.log_hyperparams({"loss": "kto", "beta": 0.1, "loss_options": {"desirable_weight": 1.25}})
    config = dict(logger.experiment.config)
    logger.experiment.finish()
    assert config["loss.desirable_weight"] == 1.25 and "loss" not in config


def test_the_config_is_flattened_so_every_override_is_a_column():
    assert flatten(
        {"beta": 0.1, "loss": {"name": "dpo", "label_smoothing": 0.0}, "optim": {"betas": [0.9]}}
    ) == [
        ("beta", 0.1),
        ("loss.name", "dpo"),
        ("loss.label_smoothing", 0.0),
        ("optim.betas", [0.9]),
    ]
