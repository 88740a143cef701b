"""Sweeps through the real command line: a β × loss grid, a failing member, and `compare` on them."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from dpo_exp.report.compare import compare
from tests.helpers import FAST, train_py

pytestmark = pytest.mark.slow


def multirun(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    return train_py(*FAST, f"output_root={tmp_path}", *overrides, multirun=True)


def test_beta_by_loss_grid_runs_every_member_and_compare_tables_them(tmp_path: Path):
    result = multirun(tmp_path, "beta=0.1,0.5", "loss=dpo,ipo")
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep_dir,) = (tmp_path / "sweeps").iterdir()
    members = sorted(path.name for path in sweep_dir.iterdir() if path.is_dir())
    # A member's folder names what the sweep varies, in the sweep's order.
    assert members == [
        "0_beta=0.1,loss=dpo",
        "1_beta=0.1,loss=ipo",
        "2_beta=0.5,loss=dpo",
        "3_beta=0.5,loss=ipo",
    ]
    assert all((sweep_dir / member / "summary.json").exists() for member in members)
    sweep_summary = json.loads((sweep_dir / "sweep_summary.json").read_text())
    assert (sweep_summary["finished"], sweep_summary["failed"]) == (4, 0)
    assert f"sweep folder: {sweep_dir}" in result.stdout

    table = compare(sweep_dir)
    out = sweep_dir / "compare"
    for name in (
        "runs.csv",
        "runs.md",
        "report.html",
        "group1_metrics_vs_step.png",
        "group1_final_vs_beta.png",
    ):
        assert (out / name).stat().st_size > 0, name
    assert not (out / "group1_frontier.png").exists()  # no eval/true_reward in these runs
    written = pd.read_csv(out / "runs.csv")
    assert len(written) == len(table) == 4
    assert sorted(zip(written["loss.name"], written["beta"], strict=True)) == [
        ("dpo", 0.1),
        ("dpo", 0.5),
        ("ipo", 0.1),
        ("ipo", 0.5),
    ]
    assert set(written["status"]) == {"finished"}
    assert (written["tokens_per_s"] > 0).all() and written["val/loss"].notna().all()
    assert "| loss | β | status |" in (out / "runs.md").read_text()  # one group: the sweep


def test_a_failing_member_is_reported_and_the_others_finish(tmp_path: Path):
    result = multirun(tmp_path, "beta=-1,0.1", "loss=dpo")
    assert result.returncode != 0  # the exit code says a member failed
    (sweep_dir,) = (tmp_path / "sweeps").iterdir()
    assert (sweep_dir / "1_beta=0.1" / "summary.json").exists()
    failed_member = sweep_dir / "0_beta=-1"
    assert "beta must be a finite number > 0" in (failed_member / "failed.txt").read_text()
    sweep_summary = json.loads((sweep_dir / "sweep_summary.json").read_text())
    assert (sweep_summary["finished"], sweep_summary["failed"]) == (1, 1)
    failed, finished = sweep_summary["runs"]
    assert failed["status"] == "failed" and "beta must be a finite number > 0" in failed["error"]
    assert finished["status"] == "finished" and "val/loss" in finished["metrics"]

    table = compare(sweep_dir).set_index("beta")
    assert table.loc[-1, "status"] == "failed" and "beta must be" in table.loc[-1, "error"]
    assert table.loc[0.1, "status"] == "finished"
