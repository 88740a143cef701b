"""Seeds folded: per setting of a group, each final metric's mean and standard deviation over its runs.

A setting is a run's values of what differs in its group, the seed left out, so runs that differ
only in their seed (or in a switch that only makes them faster, see `runs.SPEED_ONLY`) are one row.
Only finished runs count. The sd is the sample's (n - 1), empty for a single run.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from dpo_exp.report.plots import FINAL_METRICS, short
from dpo_exp.report.runs import RunGroup, RunRecord

# The column that counts a setting's runs.
RUNS = "runs"


def setting_keys(group: RunGroup) -> list[str]:
    return [key for key in group.varying if key != "seed"]


def by_setting(runs: list[RunRecord], keys: list[str]) -> list[list[RunRecord]]:
    """`runs` by their values of `keys`, in order of appearance."""
    settings: dict[tuple, list[RunRecord]] = {}
    for run in runs:
        settings.setdefault(tuple(repr(run.params.get(key)) for key in keys), []).append(run)
    return list(settings.values())


def seed_stats(group: RunGroup) -> pd.DataFrame | None:
    """A row per setting: its values, its number of finished runs, `<metric> mean` and `<metric> sd`
    for each final metric; None where no setting has two finished runs (nothing to fold)."""
    finished = [run for run in group.runs if run.status == "finished"]
    keys = setting_keys(group)
    settings = by_setting(finished, keys)
    if not settings or max(len(runs) for runs in settings) < 2:
        return None
    metrics = [name for name in FINAL_METRICS if any(name in run.final for run in finished)]
    rows = []
    for runs in settings:
        row: dict[str, Any] = {short(key): runs[0].params.get(key) for key in keys}
        row[RUNS] = len(runs)
        for name in metrics:
            values = pd.Series([run.final[name] for run in runs if name in run.final], dtype=float)
            row[f"{name} mean"] = values.mean() if len(values) else None
            row[f"{name} sd"] = values.std(ddof=1) if len(values) > 1 else None
        rows.append(row)
    return pd.DataFrame(rows)


def number(value: Any) -> bool:
    return isinstance(value, int | float) and not math.isnan(value)


def mean_sd_text(mean: Any, sd: Any) -> str:
    """`0.5123 ± 0.01414`; the mean alone for a single run; empty where no run has the metric."""
    if not number(mean):
        return ""
    return f"{mean:.4g} ± {sd:.2g}" if number(sd) else f"{mean:.4g}"


def folded_table(stats: pd.DataFrame) -> pd.DataFrame:
    """The stats as text, a "mean ± sd" column per metric: for the tables people read."""
    metrics = [column.removesuffix(" mean") for column in stats.columns if column.endswith(" mean")]
    settings = [column for column in stats.columns if not column.endswith((" mean", " sd"))]
    shown = stats[settings].copy()
    for name in metrics:
        pairs = zip(stats[f"{name} mean"], stats[f"{name} sd"], strict=True)
        shown[name] = [mean_sd_text(mean, sd) for mean, sd in pairs]
    return shown
