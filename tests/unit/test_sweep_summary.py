"""The sweep summary: built from member folders, and a member that failed outside `run` recorded."""

from __future__ import annotations

import json
from pathlib import Path

from hydra.core.utils import JobReturn, JobStatus
from hydra.types import RunMode
from omegaconf import OmegaConf

from dpo_exp.report.sweep_summary import SWEEP_SUMMARY, SweepSummary


def member(sweep_dir: Path, name: str, overrides: list[str]) -> Path:
    path = sweep_dir / name
    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "overrides.yaml").write_text("".join(f"- {line}\n" for line in overrides))
    return path


def test_a_member_that_failed_outside_run_is_recorded_with_its_error(tmp_path: Path):
    finished = member(tmp_path, "0_dpo_beta0.1", ["beta=0.1"])
    (finished / "summary.json").write_text(json.dumps({"metrics": {"val/loss": 0.5, "train/loss": 0.4}}))
    broken = member(tmp_path, "1_dpo_beta0.2", ["beta=0.2"])
    member(tmp_path, "10_dpo_beta0.3", ["beta=0.3"])  # still running: no summary, no failure
    job = JobReturn(status=JobStatus.FAILED)
    job.return_value = RuntimeError("out of memory")
    hydra = {
        "mode": RunMode.MULTIRUN,
        "runtime": {"output_dir": str(broken)},
        "sweep": {"dir": str(tmp_path)},
    }

    SweepSummary().on_job_end(OmegaConf.create({"hydra": hydra}), job)

    assert (broken / "failed.txt").read_text().startswith("RuntimeError: out of memory\n")
    summary = json.loads((tmp_path / SWEEP_SUMMARY).read_text())
    assert (summary["members"], summary["finished"], summary["failed"]) == (3, 1, 1)
    first, second, third = summary["runs"]  # in member order: 0, 1, 10
    assert first == {
        "member": "0_dpo_beta0.1",
        "overrides": ["beta=0.1"],
        "status": "finished",
        "metrics": {"val/loss": 0.5},
    }
    assert second["status"] == "failed" and second["error"] == "RuntimeError: out of memory"
    assert third["member"] == "10_dpo_beta0.3" and third["status"] == "incomplete"
    assert "| 1_dpo_beta0.2 | failed |" in (tmp_path / "sweep_summary.md").read_text()
