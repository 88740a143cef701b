"""`dpo-exp compare <folder>`: the runs under a folder, grouped, in tables, plots and one HTML page.

Reads only what runs wrote (summary.json, config.yaml, metrics.csv, failed.txt; no network). Runs are
grouped by what they share (a sweep, or single runs with the same settings but loss, β, seed and
rounds, see `runs.py`); in each group only the settings that differ become columns and legend
entries, the rest its header. Writes into `<folder>/compare/`: `runs.csv` (every run, its group),
`runs.md` (a table per group, and where a setting ran with several seeds, its mean ± sd over them),
`seeds.csv` (those means and sds as numbers), per group `group<n>_metrics_vs_step.png`,
`group<n>_final_vs_beta.png` (when β varies) and `group<n>_frontier.png` (when runs carry
`eval/true_reward` and `eval/kl`), `group<n>_reward_kl.png` (when runs carry `eval/reward` and
`eval/kl`: a generation-scored evaluation, `evaluate.reward`), and `report.html`, all of it in one
file. With `--rescore-beta`, runs trained with `save_eval_logps=true` are re-scored at other β (and
losses) without a model, into `rescored.csv` and `rescored.md`.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from dpo_exp.losses import get_loss
from dpo_exp.report.html import write_report
from dpo_exp.report.plots import (
    FINAL_METRICS,
    plot_final_vs_beta,
    plot_frontier,
    plot_metrics_vs_step,
    short,
)
from dpo_exp.report.reward_frontier import plot_reward_kl
from dpo_exp.report.runs import (
    RunGroup,
    RunRecord,
    group_runs,
    read_runs,
    read_wandb_runs,
    run_id_path,
    shared_params,
    varying_params,
)
from dpo_exp.report.seeds import folded_table, seed_stats
from dpo_exp.training.eval_logps import load_eval_logps, rescore, rescore_refusal, saved_steps
from dpo_exp.training.run_files import FAILED, SUMMARY

__all__ = ["build_table", "compare", "group_runs", "read_runs", "read_wandb_runs", "varying_params"]

# Best value over a run's evaluations, read from metrics.csv: min or max, by what "better" means.
BEST_METRICS = {"val/loss": min, "val/rewards/accuracy": max, "eval/true_reward": max}
# What the terminal table calls a metric (the files keep the full names).
TERMINAL_NAMES = {
    "val/loss": "val loss",
    "val/rewards/accuracy": "accuracy",
    "val/rewards/margin": "margin",
    "val/logratio/chosen": "Δlogp chosen",
    "eval/true_reward": "true reward",
    "eval/reward": "reward",
    "eval/win_rate": "win rate",
    "eval/kl": "KL",
}
PLOTS: dict[str, Callable[[RunGroup, Path], bool]] = {
    "metrics_vs_step": plot_metrics_vs_step,
    "final_vs_beta": plot_final_vs_beta,
    "frontier": plot_frontier,
    "reward_kl": plot_reward_kl,
}


# -- tables ------------------------------------------------------------------------------------


def best_value(run: RunRecord, metric: str) -> float | None:
    if run.history is None or metric not in run.history:
        return None
    values = run.history[metric].dropna()
    return float(BEST_METRICS[metric](values)) if len(values) else None


def metric_columns(runs: list[RunRecord], run: RunRecord) -> dict[str, Any]:
    """Final metrics (those any of `runs` has), best values over evaluations, time and speed."""
    finals = [name for name in FINAL_METRICS if any(name in other.final for other in runs)]
    bests = [name for name in BEST_METRICS if any(name in other.final for other in runs)]
    row: dict[str, Any] = {name: run.final.get(name) for name in finals}
    row.update({f"best {name}": best_value(run, name) for name in bests})
    row["wall_time_s"] = run.summary.get("wall_time_s")
    row["tokens_per_s"] = run.summary.get("tokens_per_s")
    return row


# What the group tables call the run's time and speed (runs.csv keeps the field names).
SHOWN_NAMES = {"wall_time_s": "time (s)", "tokens_per_s": "tokens/s"}


def build_table(runs: list[RunRecord], root: Path, groups: list[RunGroup] | None = None) -> pd.DataFrame:
    """Every run, a row: its folder, group, status, the settings that differ anywhere, metrics."""
    params = varying_params(runs)
    number = {id(run): group.number for group in groups or [] for run in group.runs}
    rows = []
    for run in runs:
        row: dict[str, Any] = {"run": run_id(run, root), "group": number.get(id(run)), "status": run.status}
        row.update({key: run.params.get(key) for key in params})
        row.update(metric_columns(runs, run))
        row["error"] = run.error
        rows.append(row)
    table = pd.DataFrame(rows)
    return table if groups else table.drop(columns="group")


def group_table(group: RunGroup, root: Path) -> pd.DataFrame:
    """A group's runs: the settings that differ within it (short names), status, metrics, folder."""
    rows = []
    for run in group.runs:
        row: dict[str, Any] = {short(key): run.params.get(key) for key in group.varying}
        row["status"] = run.status
        row.update({key: run.speed.get(key) for key in speed_varying(group.runs)})
        row.update(metric_columns(group.runs, run))
        row["run"] = run_id(run, root)
        if any(other.error for other in group.runs):
            row["error"] = run.error
        rows.append(row)
    leading = [short(key) for key in group.varying]
    table = pd.DataFrame(rows).rename(columns=SHOWN_NAMES)
    return table.sort_values(leading, kind="stable") if leading else table


def run_link(run: RunRecord, out_dir: Path) -> str:
    """Where report.html links a run: its folder, relative to the report (the page still finds it
    when the folder holding both moves), or its W&B page."""
    if run.url is not None:
        return run.url
    return Path(os.path.relpath(run.path.resolve(), out_dir.resolve())).as_posix() + "/"


def speed_varying(runs: list[RunRecord]) -> list[str]:
    """The speed-only settings (`runs.SPEED_ONLY`) whose value differs between `runs`."""
    keys = sorted({key for run in runs for key in run.speed})
    return [key for key in keys if len({repr(run.speed.get(key)) for run in runs}) > 1]


def run_id(run: RunRecord, root: Path) -> str:
    """The run's folder relative to `root` (a W&B run's name as it is)."""
    return run_id_path(run.path, root)


def cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "/").replace("\n", " ")


def format_markdown(table: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(map(str, table.columns)) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def group_heading(group: RunGroup) -> str:
    shared = ", ".join(f"{short(key)}={value}" for key, value in group.shared.items())
    return f"{group.number}. {group.title}" + (f"; shared: {shared}" if shared else "")


def terminal_table(table: pd.DataFrame) -> str:
    """The group's table for a terminal: no best-of columns, short metric names, numbers to 4 digits."""
    keep = [c for c in table.columns if not str(c).startswith("best ") and c not in ("time (s)", "error")]
    shown = table[keep].rename(columns=TERMINAL_NAMES)
    return shown.to_string(index=False, float_format=lambda x: f"{x:.4g}", na_rep="")


# -- the command -------------------------------------------------------------------------------


def compare(root: Path, out_dir: Path | None = None, runs: list[RunRecord] | None = None) -> pd.DataFrame:
    """Write the tables, plots and report.html for every run under `root` (or of `runs`); return
    the table of every run."""
    root = Path(root)
    runs = read_runs(root) if runs is None else runs
    if not runs:
        raise FileNotFoundError(f"no run folders (with {SUMMARY} or {FAILED}) under {root}")
    out_dir = Path(out_dir or root / "compare")
    out_dir.mkdir(parents=True, exist_ok=True)
    groups = group_runs(runs, root)
    table = build_table(runs, root, groups)
    table.to_csv(out_dir / "runs.csv", index=False)
    tables = {group.number: group_table(group, root) for group in groups}
    folded = write_seed_tables(groups, out_dir)
    sections = [
        f"## {group_heading(group)}\n\n{format_markdown(tables[group.number])}"
        + (f"\n{SEEDS_HEADING}\n\n{format_markdown(folded[group.number])}" if group.number in folded else "")
        for group in groups
    ]
    (out_dir / "runs.md").write_text("\n".join(sections))
    plots: dict[int, list[Path]] = {}
    for group in groups:
        for name, plot in PLOTS.items():
            path = out_dir / f"group{group.number}_{name}.png"
            path.unlink(missing_ok=True)  # from an earlier comparison of other runs
            if plot(group, path):
                plots.setdefault(group.number, []).append(path)
    everywhere = {k: v for k, v in shared_params(runs).items() if k in ("data.name", "model.name")}
    links = {run_id(run, root): run_link(run, out_dir) for run in runs}
    write_report(out_dir / "report.html", str(root), groups, tables, plots, everywhere, folded, links)
    return table


SEEDS_HEADING = "Seeds folded: mean ± sd of the final metrics over each setting's finished runs"


def write_seed_tables(groups: list[RunGroup], out_dir: Path) -> dict[int, pd.DataFrame]:
    """`seeds.csv` (every group's settings with more than one run: mean and sd as numbers); return
    each such group's table as text ("mean ± sd"), for runs.md, the report and the terminal."""
    stats = {group.number: seed_stats(group) for group in groups}
    stats = {number: table for number, table in stats.items() if table is not None}
    (out_dir / "seeds.csv").unlink(missing_ok=True)  # from an earlier comparison of other runs
    if stats:
        frames = [table.assign(group=number) for number, table in stats.items()]
        pd.concat(frames, ignore_index=True).to_csv(out_dir / "seeds.csv", index=False)
    return {number: folded_table(table) for number, table in stats.items()}


def print_groups(root: Path, out_dir: Path, runs: list[RunRecord]) -> None:
    for group in group_runs(runs, root):
        print(f"\n{group_heading(group)}")
        print(terminal_table(group_table(group, root)))
        stats = seed_stats(group)
        if stats is not None:
            print(f"  {SEEDS_HEADING}")
            print(folded_table(stats).rename(columns=TERMINAL_NAMES).to_string(index=False))
        for run in group.runs:
            if run.status == "failed":
                print(f"  failed: {run_id(run, root)}: {run.error}")
    print(f"\ncompare: wrote {out_dir}/report.html (tables and plots in one page), runs.csv, runs.md, plots")


def beta_list(text: str) -> list[float]:
    """`--rescore-beta`: comma-separated β values, each a finite number > 0 (as a run's `beta`)."""
    try:
        betas = [float(value) for value in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"β values are numbers, e.g. 0.05,0.1,0.5; got {text!r}") from None
    bad = [beta for beta in betas if not (math.isfinite(beta) and beta > 0)]
    if bad:
        raise argparse.ArgumentTypeError(f"β must be a finite number > 0, got {bad[0]:g}")
    return betas


def loss_list(text: str) -> list[str]:
    """`--rescore-loss`: comma-separated registered losses."""
    names = text.split(",")
    for name in names:
        try:
            get_loss(name)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
    return names


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="dpo-exp compare", description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path, help="a sweep folder, a run folder, or outputs/")
    parser.add_argument("--wandb", default=None, help="read runs of this W&B entity/project instead")
    parser.add_argument("--wandb-group", default=None, help="only this W&B group (a sweep)")
    parser.add_argument("--out", type=Path, default=None, help="where to write (default: <folder>/compare)")
    parser.add_argument(
        "--rescore-beta", type=beta_list, default=None, help="comma-separated β values, e.g. 0.05,0.1,0.5"
    )
    parser.add_argument(
        "--rescore-loss", type=loss_list, default=None, help="comma-separated losses (default: each run's)"
    )
    args = parser.parse_args(argv)
    if args.rescore_loss and not args.rescore_beta:
        parser.error("--rescore-loss needs --rescore-beta (the β values to re-score at)")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    out_dir = args.out or args.folder / "compare"
    runs = read_wandb_runs(args.wandb, args.wandb_group) if args.wandb else read_runs(args.folder)
    if not runs:  # a mistyped folder: one line, not compare's traceback
        raise SystemExit(f"dpo-exp compare: no run folders (with {SUMMARY} or {FAILED}) under {args.folder}")
    compare(args.folder, out_dir, runs)
    print_groups(args.folder, out_dir, runs)
    if args.rescore_beta:
        rescored = rescore_runs(read_runs(args.folder), args.folder, args.rescore_beta, args.rescore_loss)
        rescored.to_csv(out_dir / "rescored.csv", index=False)
        (out_dir / "rescored.md").write_text(format_markdown(rescored))
        print(rescored.to_string(index=False, float_format=lambda x: f"{x:.4g}", na_rep=""))


# -- β-free re-scoring -------------------------------------------------------------------------

# The column that says why a run was not re-scored as a loss (empty where it was).
NOT_RESCORED = "not re-scorable"


def rescore_runs(
    runs: list[RunRecord], root: Path, betas: list[float], losses: list[str] | None
) -> pd.DataFrame:
    """Every run that saved validation log-probs, at its last evaluation, at each β and loss; a run
    whose log-probs cannot be re-scored as a loss (unpaired, or no reference) is a row with the reason."""
    rows = []
    for run in runs:
        steps = saved_steps(run.path)
        if not steps:
            continue
        tensors = load_eval_logps(run.path, steps[-1])
        own_loss = run.params.get("loss.name")
        for loss in losses or [own_loss]:
            first = {
                "run": run_id(run, root),
                "step": steps[-1],
                "trained loss": own_loss,
                "trained β": run.params.get("beta"),
                "rescored loss": loss,
            }
            refusal = rescore_refusal(tensors, loss)
            if refusal is not None:
                rows.append({**first, NOT_RESCORED: refusal})
                continue
            # The run's own loss options apply when re-scoring its own loss; other losses use defaults.
            options = loss_options(run) if loss == own_loss else {}
            for beta in betas:
                scores = rescore(tensors, loss=loss, beta=beta, loss_options=options)
                rows.append({**first, "rescored β": beta, **{f"val/{k}": v for k, v in scores.items()}})
    table = pd.DataFrame(rows)
    if NOT_RESCORED not in table:
        table[NOT_RESCORED] = None
    return table[[column for column in table if column != NOT_RESCORED] + [NOT_RESCORED]]


def loss_options(run: RunRecord) -> dict[str, Any]:
    return {
        key.removeprefix("loss."): value
        for key, value in run.params.items()
        if key.startswith("loss.") and key != "loss.name"
    }


if __name__ == "__main__":
    main()
