"""`dpo-exp compare <sweep folder | outputs/>`: run folders read back into one table and a few plots.

Reads only what runs wrote (summary.json, config.yaml, metrics.csv, failed.txt; no network) and
writes into `<folder>/compare/`: `runs.csv` and `runs.md` (one row per run: the hyperparameters that
vary, final and best metrics, wall time, tokens/s, status), `metrics_vs_step.png`,
`final_vs_beta.png`, and `frontier.png` when runs carry `eval/true_reward` and `eval/kl`. With
`--rescore-beta`, runs trained with `save_eval_logps=true` are re-scored at other β (and losses)
without a model, into `rescored.csv` and `rescored.md`.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, never a window

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import yaml  # noqa: E402

from dpo_exp.training.eval_logps import load_eval_logps, rescore, saved_steps  # noqa: E402
from dpo_exp.training.run_files import FAILED, SUMMARY  # noqa: E402

# Final metrics shown when any run has them; `eval/*` come from the built-in experiment.
FINAL_METRICS = (
    "val/loss",
    "val/rewards/accuracy",
    "val/rewards/margin",
    "val/logratio/chosen",
    "eval/true_reward",
    "eval/kl",
)
# Best value over a run's evaluations, read from metrics.csv: min or max, by what "better" means.
BEST_METRICS = {"val/loss": min, "val/rewards/accuracy": max, "eval/true_reward": max}
STEP_METRICS = ("train/loss", "val/loss", "val/rewards/accuracy", "val/rewards/margin")
# Hyperparameters listed first when they vary; the others follow in name order.
LEADING_PARAMS = ("loss.name", "beta", "seed")
# Config keys that name a run rather than choose how it trains.
IGNORED_PARAMS = ("run_name", "output_root")


@dataclass
class RunRecord:
    """One run folder, as read back."""

    path: Path
    status: str  # finished, failed or incomplete
    params: dict[str, Any]  # flattened config: "optim.lr" -> 5e-4
    summary: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    history: pd.DataFrame | None = None  # metrics.csv

    @property
    def final(self) -> dict[str, float]:
        return self.summary.get("metrics", {})


# -- reading -----------------------------------------------------------------------------------


def find_run_dirs(root: Path) -> list[Path]:
    """Every folder under `root` (itself included) that a run wrote: it has a summary or a failure.

    An online run's earlier rounds (`<run>/rounds/<n>/`) are parts of that run, not runs of their own.
    """
    markers = [*root.rglob(SUMMARY), *root.rglob(FAILED)]
    return sorted({marker.parent for marker in markers if not is_earlier_round(marker.parent)})


def is_earlier_round(folder: Path) -> bool:
    return folder.parent.name == "rounds" and (folder.parent.parent / "config.yaml").exists()


def read_run(path: Path) -> RunRecord:
    params = _read_params(path)
    if (path / SUMMARY).exists():
        record = RunRecord(path, "finished", params, summary=json.loads((path / SUMMARY).read_text()))
    elif (path / FAILED).exists():
        record = RunRecord(path, "failed", params, error=(path / FAILED).read_text().strip())
    else:
        record = RunRecord(path, "incomplete", params)
    if (path / "metrics.csv").exists():
        record.history = pd.read_csv(path / "metrics.csv")
    return record


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
            "metrics": {k: v for k, v in run.summary.items() if isinstance(v, int | float) and "/" in k},
            "wall_time_s": run.summary.get("_runtime"),
        }
        status = {"finished": "finished", "failed": "failed", "crashed": "failed"}.get(
            run.state, "incomplete"
        )
        params = {key: value for key, value in run.config.items() if key not in IGNORED_PARAMS}
        records.append(RunRecord(Path(run.name), status, params, summary=summary, history=history))
    return records


def _read_params(path: Path) -> dict[str, Any]:
    """The resolved config when the run got far enough to write it, else Hydra's composed copy."""
    for candidate in (path / "config.yaml", path / ".hydra" / "config.yaml"):
        if candidate.exists():
            config = yaml.safe_load(candidate.read_text()) or {}
            flat = pd.json_normalize(config, sep=".").iloc[0].to_dict()
            return {key: value for key, value in flat.items() if key not in IGNORED_PARAMS}
    return {}


def varying_params(runs: list[RunRecord]) -> list[str]:
    """Config keys whose value differs between runs, leading ones first."""
    keys = {key for run in runs for key in run.params}
    varying = []
    for key in keys:
        # An unresolved interpolation (a run that failed before resolving) says nothing about its value.
        # A key some runs lack (another loss's option) varies only if the runs that have it differ.
        present = [run.params[key] for run in runs if key in run.params]
        values = {repr(value) for value in present if "${" not in str(value)}
        if len(values) > 1:
            varying.append(key)
    leading = [key for key in LEADING_PARAMS if key in varying]
    return leading + sorted(set(varying) - set(leading))


# -- the table ---------------------------------------------------------------------------------


def best_value(run: RunRecord, metric: str) -> float | None:
    if run.history is None or metric not in run.history:
        return None
    values = run.history[metric].dropna()
    return float(BEST_METRICS[metric](values)) if len(values) else None


def build_table(runs: list[RunRecord], root: Path) -> pd.DataFrame:
    """One row per run: where it is, its status, varying hyperparameters, metrics, speed."""
    params = varying_params(runs)
    finals = [name for name in FINAL_METRICS if any(name in run.final for run in runs)]
    bests = [name for name in BEST_METRICS if any(name in run.final for run in runs)]
    rows = []
    for run in runs:
        row: dict[str, Any] = {"run": run_id(run, root), "status": run.status}
        row.update({key: run.params.get(key) for key in params})
        row.update({name: run.final.get(name) for name in finals})
        row.update({f"best {name}": best_value(run, name) for name in bests})
        row["wall_time_s"] = run.summary.get("wall_time_s")
        row["tokens_per_s"] = run.summary.get("tokens_per_s")
        row["error"] = run.error
        rows.append(row)
    return pd.DataFrame(rows)


def run_id(run: RunRecord, root: Path) -> str:
    """The run's folder relative to `root` (a W&B run's name as it is)."""
    return str(run.path.relative_to(root)) if run.path.is_relative_to(root) else str(run.path)


def format_markdown(table: pd.DataFrame) -> str:
    def cell(value: Any) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return ""
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value).replace("|", "/").replace("\n", " ")

    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


# -- plots -------------------------------------------------------------------------------------


def run_label(run: RunRecord, params: list[str]) -> str:
    return " ".join(f"{key.removesuffix('.name')}={run.params.get(key)}" for key in params) or run.path.name


def _subplots(count: int) -> tuple[plt.Figure, list[plt.Axes]]:
    columns = min(count, 2)
    rows = math.ceil(count / columns)
    figure, axes = plt.subplots(
        rows, columns, figsize=(6 * columns, 4 * rows), squeeze=False, layout="constrained"
    )
    for extra in axes.flat[count:]:
        extra.set_visible(False)
    return figure, list(axes.flat[:count])


def plot_metrics_vs_step(runs: list[RunRecord], params: list[str], path: Path) -> bool:
    """Each metric against step, one line per run."""
    metrics = [m for m in (*STEP_METRICS, "eval/true_reward", "eval/kl") if _has_history(runs, m)]
    if not metrics:
        return False
    figure, axes = _subplots(len(metrics))
    for axis, metric in zip(axes, metrics, strict=True):
        for run in runs:
            if run.history is not None and metric in run.history:
                points = run.history[["step", metric]].dropna()
                axis.plot(points["step"], points[metric], marker=".", label=run_label(run, params))
        axis.set(title=metric, xlabel="step")
        axis.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 4), fontsize="small")
    _save(figure, path)
    return True


def _has_history(runs: list[RunRecord], metric: str) -> bool:
    return any(run.history is not None and metric in run.history for run in runs)


def plot_final_vs_beta(runs: list[RunRecord], path: Path) -> bool:
    """Final metrics against β, one line per loss: mean over seeds, bars at ± one standard deviation."""
    finished = [run for run in runs if run.status == "finished"]
    metrics = [name for name in FINAL_METRICS if any(name in run.final for run in finished)]
    if not metrics:
        return False
    points = pd.DataFrame(
        [
            {"loss": run.params.get("loss.name"), "beta": run.params.get("beta"), **run.final}
            for run in finished
        ]
    )
    figure, axes = _subplots(len(metrics))
    for axis, metric in zip(axes, metrics, strict=True):
        for loss, group in points.groupby("loss"):
            stats = group.groupby("beta")[metric].agg(["mean", "std", "count"]).sort_index()
            axis.errorbar(
                stats.index, stats["mean"], yerr=stats["std"].fillna(0), marker="o", capsize=3, label=loss
            )
        axis.set(title=f"final {metric}", xlabel="β", xscale="log")
        axis.grid(alpha=0.3)
    axes[0].legend(title="loss")
    figure.suptitle("final metrics against β (mean ± sd over seeds)")
    _save(figure, path)
    return True


def plot_frontier(runs: list[RunRecord], path: Path) -> bool:
    """True reward against KL from the reference, one point per run (the DPO paper's frontier)."""
    finished = [run for run in runs if "eval/true_reward" in run.final and "eval/kl" in run.final]
    if not finished:
        return False
    figure, axis = plt.subplots(figsize=(6, 4.5), layout="constrained")
    losses = sorted({str(run.params.get("loss.name")) for run in finished})
    for loss in losses:
        group = [run for run in finished if str(run.params.get("loss.name")) == loss]
        kls = [run.final["eval/kl"] for run in group]
        rewards = [run.final["eval/true_reward"] for run in group]
        axis.scatter(kls, rewards, label=loss)
        for run, kl, reward in zip(group, kls, rewards, strict=True):
            axis.annotate(f"β={run.params.get('beta')}", (kl, reward), fontsize="x-small")
    axis.set(xlabel="KL(π ‖ π_ref)", ylabel="true reward", title="reward against KL frontier")
    axis.grid(alpha=0.3)
    axis.legend(title="loss")
    _save(figure, path)
    return True


def _save(figure: plt.Figure, path: Path) -> None:
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)


# -- β-free re-scoring -------------------------------------------------------------------------


def rescore_runs(
    runs: list[RunRecord], root: Path, betas: list[float], losses: list[str] | None
) -> pd.DataFrame:
    """Every run that saved validation log-probs, at its last evaluation, at each β and loss."""
    rows = []
    for run in runs:
        steps = saved_steps(run.path)
        if not steps:
            continue
        tensors = load_eval_logps(run.path, steps[-1])
        own_loss = run.params.get("loss.name")
        for loss in losses or [own_loss]:
            # The run's own loss options apply when re-scoring its own loss; other losses use defaults.
            options = _loss_options(run) if loss == own_loss else {}
            for beta in betas:
                scores = rescore(tensors, loss=loss, beta=beta, loss_options=options)
                rows.append(
                    {
                        "run": run_id(run, root),
                        "step": steps[-1],
                        "trained loss": own_loss,
                        "trained β": run.params.get("beta"),
                        "rescored loss": loss,
                        "rescored β": beta,
                        **{f"val/{name}": value for name, value in scores.items()},
                    }
                )
    return pd.DataFrame(rows)


def _loss_options(run: RunRecord) -> dict[str, Any]:
    return {
        key.removeprefix("loss."): value
        for key, value in run.params.items()
        if key.startswith("loss.") and key != "loss.name"
    }


# -- the command -------------------------------------------------------------------------------


def compare(root: Path, out_dir: Path | None = None, runs: list[RunRecord] | None = None) -> pd.DataFrame:
    """Write the table and plots for every run under `root` (or of `runs`); return the table."""
    root = Path(root)
    runs = read_runs(root) if runs is None else runs
    if not runs:
        raise FileNotFoundError(f"no run folders (with {SUMMARY} or {FAILED}) under {root}")
    out_dir = Path(out_dir or root / "compare")
    out_dir.mkdir(parents=True, exist_ok=True)
    table = build_table(runs, root)
    table.to_csv(out_dir / "runs.csv", index=False)
    (out_dir / "runs.md").write_text(format_markdown(table))
    params = varying_params(runs)
    plot_metrics_vs_step(runs, params, out_dir / "metrics_vs_step.png")
    plot_final_vs_beta(runs, out_dir / "final_vs_beta.png")
    plot_frontier(runs, out_dir / "frontier.png")
    return table


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="dpo-exp compare", description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path, help="a sweep folder, a run folder, or outputs/")
    parser.add_argument("--wandb", default=None, help="read runs of this W&B entity/project instead")
    parser.add_argument("--wandb-group", default=None, help="only this W&B group (a sweep)")
    parser.add_argument("--out", type=Path, default=None, help="where to write (default: <folder>/compare)")
    parser.add_argument("--rescore-beta", default=None, help="comma-separated β values, e.g. 0.05,0.1,0.5")
    parser.add_argument("--rescore-loss", default=None, help="comma-separated losses (default: each run's)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    out_dir = args.out or args.folder / "compare"
    runs = read_wandb_runs(args.wandb, args.wandb_group) if args.wandb else None
    table = compare(args.folder, out_dir, runs)
    with pd.option_context("display.width", 200, "display.max_columns", None):
        print(table.drop(columns="error").to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    failed = table[table["status"] == "failed"]
    for row in failed.itertuples(index=False):
        print(f"failed: {row.run}: {row.error}")
    if args.rescore_beta:
        betas = [float(beta) for beta in args.rescore_beta.split(",")]
        losses = args.rescore_loss.split(",") if args.rescore_loss else None
        rescored = rescore_runs(read_runs(args.folder), args.folder, betas, losses)
        rescored.to_csv(out_dir / "rescored.csv", index=False)
        (out_dir / "rescored.md").write_text(format_markdown(rescored))
        print(rescored.to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    print(f"compare: wrote {out_dir}/runs.csv, runs.md and plots")


if __name__ == "__main__":
    main()
