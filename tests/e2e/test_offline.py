"""The default job needs no network and asks for none, with no offline switch in the environment."""

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

# Runs train.py with every outgoing connection and name lookup recorded in $NETWORK_LOG and refused.
GUARDED_TRAIN_PY = """
import os, runpy, socket, sys, traceback
def refuse(kind):
    def guard(*args, **kwargs):
        with open(os.environ["NETWORK_LOG"], "a") as log:
            log.write(f"{kind} {args[:2]!r}\\n" + "".join(traceback.format_stack(limit=8)))
        raise OSError(101, "network blocked by the test")
    return guard
socket.socket.connect = refuse("connect")
socket.getaddrinfo = refuse("getaddrinfo")
sys.argv = ["train.py", *sys.argv[1:]]
runpy.run_path("train.py", run_name="__main__")
"""


def environment_without_offline_switches(**extra: str) -> dict[str, str]:
    removed = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "WANDB_MODE")
    return {**{k: v for k, v in os.environ.items() if k not in removed}, **extra}


def test_the_default_job_opens_no_connection(tmp_path: Path):
    log = tmp_path / "network.log"
    command = [sys.executable, "-c", GUARDED_TRAIN_PY, *SMALL, f"output_root={tmp_path}"]
    env = environment_without_offline_switches(NETWORK_LOG=str(log))
    result = subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not log.exists(), log.read_text()[:3000]
    (summary_file,) = (tmp_path / "runs").glob("*/*/summary.json")
    assert "eval/true_reward" in json.loads(summary_file.read_text())["metrics"]


def network_is_blockable() -> bool:
    return shutil.which("unshare") is not None and subprocess.run(["unshare", "-rn", "true"]).returncode == 0


@pytest.mark.skipif(not network_is_blockable(), reason="needs `unshare -rn` (a user and network namespace)")
def test_the_default_job_runs_with_networking_blocked(tmp_path: Path):
    command = ["unshare", "-rn", sys.executable, "train.py", *SMALL, f"output_root={tmp_path}"]
    env = environment_without_offline_switches()
    result = subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    (summary_file,) = (tmp_path / "runs").glob("*/*/summary.json")
    summary = json.loads(summary_file.read_text())
    assert "eval/true_reward" in summary["metrics"] and summary["reference"]["eval/kl"] == pytest.approx(
        0, abs=1e-5
    )
