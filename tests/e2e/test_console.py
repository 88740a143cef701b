"""What a researcher sees in a terminal: a line per stage, a labelled result, and nothing else."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT
from tests.helpers import FAST, SMALL_EXPERIMENT, train_py

pytestmark = pytest.mark.slow

# What libraries print unasked, and what this project used to print by accident.
NOISE = (
    "GPU available",
    "litlogger",
    "LeafSpec",
    "Loading weights",
    "Writing model shards",
    "Generating train split",
    "val_dataloader",
    "Modules in train mode",
    "objective",
    "Epoch",
)


def test_the_experiment_prints_a_line_per_stage_and_a_labelled_result(tmp_path: Path):
    experiment = [
        *SMALL_EXPERIMENT,
        "trainer.enable_progress_bar=true",
        "loss=rft",
        f"output_root={tmp_path}",
    ]
    result = train_py(*experiment)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs" / "rft_tiny_arithmetic_seed0").iterdir()  # RFT: no beta in its name
    lines = result.stdout.splitlines()
    stages = [line.split()[0] for line in lines[:5]]
    assert stages == ["[sft]", "[sample]", "[sft-eval]", "[train]", "[export]"], result.stdout
    assert lines[0].startswith("[sft]      built in") and str(tmp_path / "cache" / "sft") in lines[0]
    assert lines[5].startswith("── result") and lines[6].startswith("rft · seed 0 · tiny on arithmetic")
    assert lines[-1] == f"run folder: {run_dir}" and len(lines) <= 14
    for noise in NOISE:
        assert noise not in result.stdout + result.stderr, noise
    log = (run_dir / "run.log").read_text()
    assert "[train]" in log and f"run folder: {run_dir}" in log

    # Everything cached now: the stages say so; verbosity=quiet keeps the result block alone.
    again = train_py(*experiment)
    assert [line.split()[:2] for line in again.stdout.splitlines()[:3]] == [
        ["[sft]", "reused"],
        ["[sample]", "reused"],
        ["[sft-eval]", "reused"],
    ]
    quiet = train_py(*experiment, "verbosity=quiet")
    assert quiet.returncode == 0 and quiet.stdout.splitlines()[0].startswith("── result"), quiet.stdout
    assert "[train]" not in quiet.stdout


def test_a_data_report_writes_no_run_folder(tmp_path: Path):
    command = "import sys; from dpo_exp.commands import console_main; sys.argv[0] = 'dpo-exp'; console_main()"
    arguments = ["data-report", *FAST, f"output_root={tmp_path}"]
    result = subprocess.run(
        [sys.executable, "-c", command, *arguments],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "train data (synthetic)" in result.stdout
    assert not (tmp_path / "runs").exists()


def test_progress_in_a_log_file_is_plain_lines_not_carriage_return_frames(tmp_path: Path):
    result = train_py(*FAST, "trainer.enable_progress_bar=true", f"output_root={tmp_path}")  # no terminal
    assert result.returncode == 0, result.stderr[-3000:]
    assert "\r" not in result.stdout + result.stderr
    lines = result.stderr.splitlines()
    train = [line.split(" in ")[0] for line in lines if line.startswith("train ")]
    assert train == [f"train {step}/4 steps ({25 * step}%)" for step in range(1, 5)], lines  # a line a tenth
    assert "loss=" in [line for line in lines if line.startswith("train 4/4")][0]  # the bar's figures
    assert [line for line in lines if line.startswith("export ")][-1].startswith("export 3/3 parts (100%)")
