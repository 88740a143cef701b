"""Run folders read back, their settings flattened, and runs grouped by what they share.

A group is the members of one sweep (a folder Hydra's multirun made, or one W&B group), or the
single runs that share every setting but the loss, β, seed and online rounds (and the switches that
only make a run faster). Within a group only the settings that differ name its runs; the settings it
shares are its header.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from dpo_exp.losses import takes_beta
from dpo_exp.training.metrics_file import METRICS, read_metrics
from dpo_exp.training.run_files import FAILED, FINISHED_IN, SUMMARY, failure_message

# Settings that name or place a run, or change what it writes but not what it learns.
IGNORED_PARAMS = ("run_name", "output_root", "cache_dir", "reference.cache_dir", "verbosity", "resume")
IGNORED_PREFIXES = ("logger.", "checkpoint.", "export.", "trainer.enable_")
# In the built-in experiment these are the stages' outputs (paths made from other settings).
EXPERIMENT_DERIVED = ("model.path", "model.ref_path", "data.train_path", "data.validation_path",
                      "data.source", "data.options")  # fmt: skip
# The built-in experiment's own sections: they change nothing in a run on a fixed dataset.
EXPERIMENT_ONLY = ("task.", "sft.", "sample.", "evaluate.", "online.")
# Except, with `evaluate.reward`, the generation-scored evaluation's settings: runs scored by another
# reward, on other prompts or at another temperature have figures that do not compare.
GENERATION_EVAL = ("evaluate.reward", "evaluate.reward_output", "evaluate.reward_revision",
                   "evaluate.prompts", "evaluate.temperature", "evaluate.max_new_tokens",
                   "evaluate.seed")  # fmt: skip
# Paths to the same numbers, only faster (conf/config.yaml's `speed:`, `fast_paths` in
# training/run.py): runs that differ in them alone learn the same, so they group and fold as one
# setting; each run's own values are kept apart (`RunRecord.speed`), for the table beside tokens/s.
SPEED_ONLY = ("speed.head_on_completions", "speed.share_prompt", "speed.pack", "speed.logits_chunk",
              "speed.peak_flops", "reference.cache", "model.activation_checkpointing")  # fmt: skip
# Settings single runs may differ in and still be compared in one group.
AXES = ("loss.", "beta", "seed", "online.")
# Listed first when they differ; the others follow in name order.
LEADING_PARAMS = ("loss.name", "beta", "seed")
# Shown in a group's header whenever the group shares them, in this order.
IDENTITY_PARAMS = ("loss.name", "beta", "seed", "data.name", "model.name", "trainer.max_steps")
SWEEP_MARKERS = ("multirun.yaml", "sweep_summary.json")


@dataclass
class RunRecord:
    """One run folder, as read back."""

    path: Path
    status: str  # finished, failed or incomplete
    params: dict[str, Any]  # flattened config: "optim.lr" -> 5e-4
    summary: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    history: pd.DataFrame | None = None  # metrics.csv
    sweep: str | None = None  # the sweep folder (or W&B group) it belongs to
    speed: dict[str, Any] = field(default_factory=dict)  # its SPEED_ONLY settings
    url: str | None = None  # where to open it: None for a folder on disk (linked by its path)

    @property
    def final(self) -> dict[str, float]:
        return self.summary.get("metrics", {})


@dataclass
class RunGroup:
    """Runs compared together: `varying` names them, `shared` is what they have in common."""

    number: int
    title: str
    runs: list[RunRecord]
    varying: list[str]
    shared: dict[str, Any]


# -- reading -----------------------------------------------------------------------------------


def find_run_dirs(root: Path) -> list[Path]:
    """Every folder under `root` (itself included) that a run wrote: it has a summary or a failure.

    An online run's earlier rounds (`<run>/rounds/<n>/`) are parts of that run, not runs of their own.
    """
    markers = [*root.rglob(SUMMARY), *root.rglob(FAILED)]
    folders = {marker.parent for marker in markers if not is_earlier_round(marker.parent)}
    # A stopped run that another folder continued to its end is listed there, once, as finished.
    return sorted(folder for folder in folders if not (folder / FINISHED_IN).exists())


def is_earlier_round(folder: Path) -> bool:
    return folder.parent.name == "rounds" and (folder.parent.parent / "config.yaml").exists()


def read_run(path: Path) -> RunRecord:
    flat = read_config(path)
    params = useful_params(flat)
    if (path / SUMMARY).exists():
        record = RunRecord(path, "finished", params, summary=json.loads((path / SUMMARY).read_text()))
    elif (path / FAILED).exists():
        record = RunRecord(path, "failed", params, error=failure_reason(path))
    else:
        record = RunRecord(path, "incomplete", params)
    record.speed = speed_params(flat)
    if (path / METRICS).exists():
        record.history = read_metrics(path / METRICS)
    if any((path.parent / marker).exists() for marker in SWEEP_MARKERS):
        record.sweep = str(path.parent)
    return record


def failure_reason(path: Path) -> str:
    """The first line of a failed run's message, for a table cell (failed.txt keeps the traceback)."""
    lines = failure_message(path).splitlines()
    return lines[0] if lines else "failed (failed.txt is empty)"


def read_runs(root: Path) -> list[RunRecord]:
    return [read_run(path) for path in find_run_dirs(root)]


def read_wandb_runs(project: str, group: str | None = None) -> list[RunRecord]:
    """The same records from the W&B API (needs network and a login): `entity/project`, one group."""
    import wandb

    filters = {"group": group} if group else {}
    records = []
    for run in wandb.Api().runs(project, filters=filters):
        history = run.history(pandas=True).rename(columns={"_step": "step"})
        summary = {
            "metrics": wandb_metrics(dict(run.summary.items())),
            "wall_time_s": run.summary.get("_runtime"),
        }
        status = {"finished": "finished", "failed": "failed", "crashed": "failed"}.get(
            run.state, "incomplete"
        )
        params = useful_params(dict(run.config))
        sweep = getattr(run, "group", None) or None
        record = RunRecord(Path(run.name), status, params, summary, history=history, sweep=sweep)
        record.speed = speed_params(dict(run.config))
        record.url = getattr(run, "url", None) or ""  # "": a W&B run without a page, no link
        records.append(record)
    return records


def wandb_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """A W&B run's final figures: a number, or the last value of one it keeps with its best
    (`{"min": best, "last": last}`, `dpo_exp.training.wandb_run.BEST_VALUES`)."""
    last = {k: v.get("last") if isinstance(v, Mapping) else v for k, v in summary.items() if "/" in k}
    return {k: v for k, v in last.items() if isinstance(v, int | float)}


def read_config(path: Path) -> dict[str, Any]:
    """The resolved config, flattened, when the run got far enough to write it, else Hydra's
    composed copy."""
    for candidate in (path / "config.yaml", path / ".hydra" / "config.yaml"):
        if candidate.exists():
            config = yaml.safe_load(candidate.read_text()) or {}
            return pd.json_normalize(config, sep=".").iloc[0].to_dict()
    return {}


def speed_params(flat: dict[str, Any]) -> dict[str, Any]:
    return {key: flat[key] for key in SPEED_ONLY if key in flat}


def useful_params(flat: dict[str, Any]) -> dict[str, Any]:
    """The settings that decide what a run learns: not those that name or place it or only make it
    faster, not the experiment's stage outputs or (on a fixed dataset) its unused sections (but the
    generation-scored evaluation's settings, where a reward scores it), not β where the loss has none."""
    experiment = any(key.startswith("task.") for key in flat)
    unused = EXPERIMENT_DERIVED if experiment else EXPERIMENT_ONLY
    scored = () if experiment or flat.get("evaluate.reward") is None else GENERATION_EVAL
    params = {
        key: value
        for key, value in flat.items()
        if key not in IGNORED_PARAMS
        and key not in SPEED_ONLY
        and not key.startswith(IGNORED_PREFIXES)
        and (not key.startswith(unused) or key in scored)
    }
    if "loss.name" in params and not takes_beta(str(params["loss.name"])):
        params.pop("beta", None)
    return params


# -- what differs ------------------------------------------------------------------------------


def known(value: Any) -> bool:
    """An unresolved interpolation (a run that failed before resolving) says nothing about its value."""
    return "${" not in str(value)


def varying_params(runs: list[RunRecord]) -> list[str]:
    """Config keys whose value differs between runs, leading ones first.

    A key some runs lack (another loss's option) varies only if the runs that have it differ;
    but β, which a loss without one (RFT) lacks, is shown whenever some run has it and some not.
    """

    def varies(key: str) -> bool:
        values = {repr(run.params[key]) for run in runs if key in run.params and known(run.params[key])}
        partial = key in LEADING_PARAMS and any(key not in run.params for run in runs) and bool(values)
        return len(values) > 1 or partial

    varying = [key for key in {key for run in runs for key in run.params} if varies(key)]
    leading = [key for key in LEADING_PARAMS if key in varying]
    return leading + sorted(set(varying) - set(leading))


def shared_params(runs: list[RunRecord]) -> dict[str, Any]:
    """Keys every run has, with one value."""
    common = set.intersection(*(set(run.params) for run in runs)) if runs else set()
    return {
        key: runs[0].params[key]
        for key in sorted(common)
        if len({repr(run.params[key]) for run in runs}) == 1 and known(runs[0].params[key])
    }


# -- groups ------------------------------------------------------------------------------------


def group_key(run: RunRecord) -> tuple:
    if run.sweep is not None:
        return ("sweep", run.sweep)
    rest = {key: repr(value) for key, value in run.params.items() if not key.startswith(AXES)}
    return ("runs", tuple(sorted(rest.items())))


def group_runs(runs: list[RunRecord], root: Path) -> list[RunGroup]:
    """Runs grouped by sweep, or (single runs) by every setting but loss, β, seed and rounds."""
    keyed: dict[tuple, list[RunRecord]] = {}
    for run in runs:
        keyed.setdefault(group_key(run), []).append(run)
    groups = []
    for number, (key, members) in enumerate(keyed.items(), start=1):
        others = [run for run in runs if all(run is not member for member in members)]
        header = group_header(shared_params(members), others)
        title = group_title(key, members, root)
        groups.append(RunGroup(number, title, members, varying_params(members), header))
    return groups


def group_header(shared: dict[str, Any], others: list[RunRecord]) -> dict[str, Any]:
    """What a group shares that says what ran (loss, β, seed, data, model, steps) or that sets it
    apart: a value some run outside it has otherwise."""

    def differs(key: str) -> bool:
        return any(key in run.params and repr(run.params[key]) != repr(shared[key]) for run in others)

    keys = [key for key in shared if key in IDENTITY_PARAMS or differs(key)]
    order = {key: rank for rank, key in enumerate(IDENTITY_PARAMS)}
    keys.sort(key=lambda key: (order.get(key, len(order)), key))
    return {key: shared[key] for key in keys}


def group_title(key: tuple, members: list[RunRecord], root: Path) -> str:
    count = f"{len(members)} run{'s' if len(members) != 1 else ''}"
    if key[0] == "sweep":
        return f"sweep {run_id_path(Path(key[1]), root)} ({count})"
    return f"single runs ({count})"


def run_id_path(path: Path, root: Path) -> str:
    """`path` relative to `root` where it lies under it (a W&B run's name as it is)."""
    if path.is_relative_to(root) and path != root:
        return str(path.relative_to(root))
    return path.name if path == root else str(path)
