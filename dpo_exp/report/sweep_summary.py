"""The sweep's own record: which members finished and which failed (with their error), kept current.

A Hydra callback rewrites `sweep_summary.json` and `sweep_summary.md` in the sweep folder after every
member ends, from what the member folders hold, so the record is right even when Hydra stops on a
failed member before `on_multirun_end`. A lock serialises members that end together (joblib).
"""

from __future__ import annotations

import fcntl
import json
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from dpo_exp.console import result, warn
from dpo_exp.storage import write_json_atomically
from dpo_exp.training.run_files import FAILED, SUMMARY, failure_message, write_failure

SWEEP_SUMMARY = "sweep_summary.json"
SWEEP_TABLE = "sweep_summary.md"
HEADLINE = ("val/loss", "val/rewards/accuracy", "val/rewards/margin")


def member_record(member_dir: Path) -> dict[str, Any]:
    """Status, overrides, error and headline metrics of one member folder."""
    overrides_file = member_dir / ".hydra" / "overrides.yaml"
    overrides = overrides_file.read_text().splitlines() if overrides_file.exists() else []
    record: dict[str, Any] = {
        "member": member_dir.name,
        "overrides": [line.removeprefix("- ").strip() for line in overrides],
    }
    if (member_dir / SUMMARY).exists():
        metrics = json.loads((member_dir / SUMMARY).read_text())["metrics"]
        record["status"] = "finished"
        record["metrics"] = {name: metrics[name] for name in HEADLINE if name in metrics}
    elif (member_dir / FAILED).exists():
        record["status"] = "failed"
        record["error"] = failure_message(member_dir)
    else:
        record["status"] = "incomplete"
    return record


def member_number(member_dir: Path) -> int:
    number = member_dir.name.split("_", 1)[0]
    return int(number) if number.isdigit() else -1


def write_sweep_summary(sweep_dir: Path) -> dict[str, Any]:
    """Rebuild the sweep's summary from its member folders; return it."""
    members = sorted(
        (path for path in sweep_dir.iterdir() if (path / ".hydra").is_dir()),
        key=lambda path: (member_number(path), path.name),
    )
    records = [member_record(path) for path in members]
    summary = {
        "sweep_dir": str(sweep_dir),
        "members": len(records),
        "finished": sum(record["status"] == "finished" for record in records),
        "failed": sum(record["status"] == "failed" for record in records),
        "runs": records,
    }
    write_json_atomically(summary, sweep_dir / SWEEP_SUMMARY)
    (sweep_dir / SWEEP_TABLE).write_text(format_sweep_table(summary))
    return summary


def format_sweep_table(summary: dict[str, Any]) -> str:
    lines = [
        f"# Sweep {summary['sweep_dir']}",
        "",
        f"{summary['finished']} finished, {summary['failed']} failed, of {summary['members']} members.",
        "",
        "| member | status | " + " | ".join(HEADLINE) + " | error |",
        "|---|---|" + "---|" * len(HEADLINE) + "---|",
    ]
    for record in summary["runs"]:
        metrics = record.get("metrics", {})
        figures = [f"{metrics[name]:.4f}" if name in metrics else "" for name in HEADLINE]
        error = record.get("error", "").replace("|", "/").replace("\n", " ")
        lines.append(f"| {record['member']} | {record['status']} | " + " | ".join(figures) + f" | {error} |")
    return "\n".join(lines) + "\n"


def _job_error(job_return: JobReturn) -> BaseException:
    """The exception of a failed job (JobReturn raises it again when its value is read)."""
    try:
        job_return.return_value  # noqa: B018
    except BaseException as error:  # noqa: BLE001
        return error
    raise AssertionError("the job did not fail")


class SweepSummary(Callback):
    """Hydra callback: keep the sweep summary current as members end; say where it is at the end."""

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if config.hydra.mode != RunMode.MULTIRUN:
            return
        if job_return.status == JobStatus.FAILED:
            member_dir = Path(config.hydra.runtime.output_dir)
            if not (member_dir / FAILED).exists():  # failed before `run` could record it
                write_failure(member_dir, _job_error(job_return))
            warn(f"sweep member failed, the others go on: {member_dir}")
        self._update(Path(config.hydra.sweep.dir))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        summary = self._update(Path(config.hydra.sweep.dir))
        result(
            f"sweep folder: {summary['sweep_dir']} | {summary['finished']} finished, "
            f"{summary['failed']} failed | compare: dpo-exp compare {summary['sweep_dir']}"
        )

    @staticmethod
    def _update(sweep_dir: Path) -> dict[str, Any]:
        sweep_dir.mkdir(parents=True, exist_ok=True)
        with open(sweep_dir / ".sweep_summary.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            return write_sweep_summary(sweep_dir)
