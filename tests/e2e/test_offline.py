"""The default job needs no network: it runs in a network namespace with no interfaces up."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT
from tests.e2e.test_pipeline import SMALL

pytestmark = pytest.mark.slow


def network_is_blockable() -> bool:
    return shutil.which("unshare") is not None and subprocess.run(["unshare", "-rn", "true"]).returncode == 0


@pytest.mark.skipif(not network_is_blockable(), reason="needs `unshare -rn` (a user and network namespace)")
def test_the_default_job_runs_with_networking_blocked(tmp_path: Path):
    # No HF_HUB_OFFLINE and no WANDB_MODE here: the default job must not try the network at all.
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "WANDB_MODE")
    }
    command = ["unshare", "-rn", sys.executable, "train.py", *SMALL, f"output_root={tmp_path}"]
    result = subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    (summary_file,) = (tmp_path / "runs").glob("*/*/summary.json")
    summary = json.loads(summary_file.read_text())
    assert "eval/true_reward" in summary["metrics"] and summary["reference"]["eval/kl"] == pytest.approx(
        0, abs=1e-5
    )
