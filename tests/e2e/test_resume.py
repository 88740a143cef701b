"""A run killed with SIGKILL mid-training and resumed ends exactly where an uninterrupted run ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dpo_exp.cli import run
from tests.conftest import PROJECT_ROOT
from tests.helpers import FAST, compose_config

pytestmark = pytest.mark.slow

# 40 steps over 80 training pairs of 8: the kill lands mid-epoch, resumption must skip seen batches.
SETTINGS = ["trainer.max_steps=40", "trainer.val_check_interval=20", "checkpoint.every_n_steps=5"]


def model_metrics(summary: dict) -> dict[str, float]:
    return {name: value for name, value in summary["metrics"].items() if not name.startswith("perf/")}


def test_killed_and_resumed_run_matches_an_uninterrupted_run(tmp_path: Path):
    reference = model_metrics(run(compose_config(SETTINGS), tmp_path / "uninterrupted"))

    run_dir = tmp_path / "killed"
    command = [sys.executable, "train.py", *FAST, *SETTINGS, f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(
        command, cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 240
    while not (run_dir / "checkpoints" / "step000015.ckpt").exists():
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (run_dir / "summary.json").exists()  # an interrupted run never looks finished

    result = subprocess.run(
        [*command, "resume=auto"], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming from" in result.stdout
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["resumed_from"] and summary["global_step"] == 40
    assert model_metrics(summary) == reference
    assert (run_dir / "metrics.part1.csv").exists()  # the interrupted part's metrics are kept
