"""The real command line, end to end, in a subprocess: what a researcher types."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import PROJECT_ROOT
from tests.helpers import FAST, FAST_MODEL, FAST_TRAINER, SINGLE_RUN, train_py

pytestmark = pytest.mark.slow


def train(tmp_path: Path, *overrides: str, fast: list[str] = FAST) -> subprocess.CompletedProcess:
    return train_py(*fast, f"output_root={tmp_path}", *overrides)


def test_train_writes_a_finished_run_folder(tmp_path: Path):
    result = train(tmp_path, "loss=ipo", "beta=0.5")
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert run_dir.name == "ipo_tiny_synthetic_beta0.5_seed0"
    (run_dir,) = run_dir.iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["loss"] == "ipo" and summary["beta"] == 0.5 and summary["global_step"] == 4
    assert summary["tokens_per_s"] > 0 and len(summary["config_hash"]) == 16
    # Named by its config: runs of different configs never share a folder, whenever they start.
    assert run_dir.name.endswith("-" + summary["config_hash"][:8])
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["beta"] == 0.5 and config["loss"]["name"] == "ipo"
    with open(run_dir / "metrics.csv") as stream:
        rows = list(csv.DictReader(stream))
    assert any(row.get("train/loss") for row in rows) and any(row.get("val/loss") for row in rows)
    assert not (run_dir / "failed.txt").exists()
    assert f"run folder: {run_dir}" in result.stdout


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["beta=0"], "beta must be a finite number > 0"),
        (["loss=nope"], "Could not find 'loss/nope'"),
        (
            ["data=hh_helpful", "data.train_path=/nonexistent.jsonl"],
            "data file not found: /nonexistent.jsonl",
        ),
    ],
)
def test_bad_config_fails_before_any_model_and_leaves_no_finished_run(tmp_path: Path, overrides, message):
    result = train(tmp_path, *overrides, fast=SINGLE_RUN + FAST_MODEL + FAST_TRAINER)
    assert result.returncode != 0
    assert message in result.stderr + result.stdout
    assert "LlamaForCausalLM" not in result.stdout  # stopped before any model was built
    assert not list(tmp_path.rglob("summary.json"))
    assert not (tmp_path / "runs").exists()  # no folder for a run the checks refused


@pytest.mark.parametrize("below", ["", "outputs"])
def test_an_output_folder_that_cannot_be_made_is_named_in_one_line(tmp_path: Path, below: str):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    root = blocker / below  # the file itself, or a folder beneath it
    command = [sys.executable, "train.py", *FAST, f"output_root={root}"]
    result = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("cannot write")]
    assert line.startswith(f"cannot write {root}/runs/")
    assert line.endswith(f"Not a directory; {blocker} is a file, not a folder")


# `python train.py` with Hydra's clock stopped at one second, so launches name the same folder.
SAME_SECOND = """
import datetime, sys
import hydra.core.utils
class Stopped(datetime.datetime):
    @classmethod
    def now(cls, tz=None):
        return cls(2026, 1, 1, 12, 0, 0)
hydra.core.utils.datetime = Stopped  # what Hydra's `${now:}` reads
sys.argv[0] = "train.py"
from dpo_exp.cli import main
main()
"""


def test_the_same_config_launched_twice_in_the_same_second_gets_two_finished_folders(tmp_path: Path):
    command = [sys.executable, "-c", SAME_SECOND, *FAST, f"output_root={tmp_path}"]
    environment = {"HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    launches = [
        subprocess.Popen(command, cwd=PROJECT_ROOT, env={**os.environ, **environment}, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]  # fmt: skip
    for launch in launches:
        _, stderr = launch.communicate(timeout=300)
        assert launch.returncode == 0, stderr[-3000:]
    (name,) = (tmp_path / "runs").iterdir()
    folders = sorted(folder.name for folder in name.iterdir())
    assert len(folders) == 2 and folders[0].startswith("20260101-120000-")
    assert folders[1] == folders[0] + "-2"
    assert all((name / folder / "summary.json").exists() for folder in folders)
