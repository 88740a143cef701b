"""FSDP2 (`fully_shard`) through Lightning's ModelParallelStrategy, on 2 CPU processes (gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dpo_exp.cli import run
from tests.conftest import PROJECT_ROOT
from tests.helpers import FAST, compose_config

pytestmark = pytest.mark.slow

IN_ORDER = ["data.shuffle=false", "trainer.max_steps=4", "trainer.val_check_interval=4", "optim.eps=1e-3"]


def test_fsdp_on_two_processes_trains_like_one_process(tmp_path: Path):
    single = run(
        compose_config([*IN_ORDER, "data.batch_size=8", "speed.head_on_completions=false"]), tmp_path / "one"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "train.py", *FAST, *IN_ORDER, "data.batch_size=4", "strategy=fsdp"]
    result = subprocess.run(
        [*command, f"output_root={tmp_path}"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs").glob("*/*")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["global_step"] == 4
    for name in ("val/loss", "val/rewards/accuracy", "val/logps/chosen"):
        assert summary["metrics"][name] == pytest.approx(single["metrics"][name], rel=1e-4, abs=1e-4), name
