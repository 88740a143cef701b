"""A group's figures at fixed, readable sizes: small multiples, legends of what differs, no overlaps.

Every figure is laid out at a fixed size in inches at DPI dots per inch (the widest, three panels and
a legend, is 1,360 pixels), so a sweep of 40 runs gives the same page as a sweep of 4. Runs that
differ only in their seed are one line (their mean, and a band from the lowest to the highest).
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, never a window

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FormatStrFormatter  # noqa: E402
from matplotlib.transforms import Bbox  # noqa: E402

from dpo_exp.report.runs import RunGroup, RunRecord  # noqa: E402
from dpo_exp.report.style import RunColours, beta_axis, thin_tick_labels  # noqa: E402

DPI = 100
PANEL = (3.6, 2.6)  # inches per small multiple
COLUMNS = 3
LEGEND_WIDTH = 2.8  # inches beside the panels
MAX_LEGEND = 16  # entries; the table lists every run
FINAL_METRICS = (
    "val/loss",
    "val/rewards/accuracy",
    "val/rewards/margin",
    "val/logratio/chosen",
    "eval/true_reward",
    "eval/reward",
    "eval/win_rate",
    "eval/kl",
)
# A loss's own scale: IPO's loss near 25 beside DPO's near 0.7 on one axis flattens one of them, so
# where a group holds several losses each gets its own panel of these metrics.
LOSS_METRICS = ("train/loss", "val/loss")
MARKER = {"marker": "o", "markersize": 3}  # a run evaluated once is a point, not an empty panel
STEP_METRICS = (
    "train/loss",
    "val/loss",
    "val/rewards/accuracy",
    "val/rewards/margin",
    "eval/true_reward",
    "eval/reward",
    "eval/win_rate",
    "eval/kl",
)


def short(key: str) -> str:
    """`loss.name` -> `loss`, `beta` -> `β`: what a legend or a column calls a setting."""
    return {"beta": "β", "loss.name": "loss"}.get(key, key.removesuffix(".name"))


def value_text(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def describe(run: RunRecord, keys: list[str]) -> str:
    """`loss=dpo β=0.5`: the run's values of `keys` (a key it lacks, such as RFT's β, left out)."""
    return " ".join(f"{short(key)}={value_text(run.params[key])}" for key in keys if key in run.params)


def series(runs: list[RunRecord], keys: list[str]) -> dict[str, list[RunRecord]]:
    """Runs by their values of `keys` (in order of appearance): one line, or point, each."""
    grouped: dict[str, list[RunRecord]] = {}
    for run in runs:
        grouped.setdefault(describe(run, keys), []).append(run)
    return {
        label or ("the run" if len(v) == 1 else f"mean of {len(v)} runs"): v for label, v in grouped.items()
    }


def line_keys(group: RunGroup) -> list[str]:
    """What tells one line from another: the differing settings, seeds averaged."""
    return [key for key in group.varying if key != "seed"]


def panels(runs: list[RunRecord], metrics: list[str], has: Any) -> list[tuple[str, str | None]]:
    """(metric, loss) per panel: a loss metric once per loss where `runs` hold several losses (each
    on its own scale), every other metric once (loss None: every run). `has(run, metric)` says
    whether a run has figures of that metric."""
    result: list[tuple[str, str | None]] = []
    for metric in metrics:
        losses = list(dict.fromkeys(str(run.params.get("loss.name")) for run in runs if has(run, metric)))
        if metric in LOSS_METRICS and len(losses) > 1:
            result += [(metric, loss) for loss in losses]
        else:
            result.append((metric, None))
    return result


def in_panel(runs: list[RunRecord], loss: str | None) -> list[RunRecord]:
    return runs if loss is None else [run for run in runs if str(run.params.get("loss.name")) == loss]


def panel_title(metric: str, loss: str | None) -> str:
    return metric if loss is None else f"{metric} ({loss})"


def has_history(run: RunRecord, metric: str) -> bool:
    return run.history is not None and metric in run.history


def grid(count: int, legend: bool) -> tuple[plt.Figure, list[plt.Axes]]:
    """`count` panels, up to COLUMNS a row, at PANEL inches each, and room for a legend on the right."""
    columns = min(count, COLUMNS)
    rows = math.ceil(count / columns)
    width = columns * PANEL[0] + (LEGEND_WIDTH if legend else 0)
    figure, axes = plt.subplots(
        rows, columns, figsize=(width, rows * PANEL[1] + 0.4), squeeze=False, layout="constrained", dpi=DPI
    )
    for extra in axes.flat[count:]:
        extra.set_visible(False)
    return figure, list(axes.flat[:count])


def legend(figure: plt.Figure, handles: list[Any], labels: list[str]) -> None:
    if len(labels) > MAX_LEGEND:
        hidden = len(labels) - (MAX_LEGEND - 1)
        handles, labels = handles[: MAX_LEGEND - 1], labels[: MAX_LEGEND - 1]
        handles.append(plt.Line2D([], [], linestyle="none"))
        labels.append(f"… {hidden} more: see the table")
    wrapped = [textwrap.fill(label, 30) for label in labels]
    figure.legend(handles, wrapped, loc="outside right upper", fontsize="small", frameon=False)


def plain_numbers(axis: plt.Axes) -> None:
    """A grid, and y ticks written out (no "1e-9 + 0.1458" offset above the axis)."""
    axis.grid(alpha=0.3)
    axis.ticklabel_format(axis="y", useOffset=False)


def save(figure: plt.Figure, path: Path) -> None:
    figure.savefig(path, dpi=DPI)  # the figure's own size: no tight box that grows with its legend
    plt.close(figure)


def history_of(runs: list[RunRecord], metric: str) -> pd.DataFrame | None:
    """Mean, min and max of `metric` over `runs` at each step (one run: all three the same)."""
    frames = [
        run.history[["step", metric]].dropna()
        for run in runs
        if run.history is not None and metric in run.history
    ]
    if not frames:
        return None
    return pd.concat(frames).groupby("step")[metric].agg(["mean", "min", "max"])


def plot_metrics_vs_step(group: RunGroup, path: Path) -> bool:
    """Each metric against step, from step 0: a panel per metric (per loss for a loss), a line per
    setting (seeds averaged, band), a marker at each evaluation."""
    metrics = [m for m in STEP_METRICS if any(has_history(run, m) for run in group.runs)]
    if not metrics:
        return False
    lines = series(group.runs, line_keys(group))
    colours = RunColours(group)
    layout = panels(group.runs, metrics, has_history)
    figure, axes = grid(len(layout), legend=True)
    drawn: dict[str, Any] = {}  # label -> a line, for the legend: each line once, whichever panel
    for axis, (metric, loss) in zip(axes, layout, strict=True):
        for label, runs in lines.items():
            points = history_of(in_panel(runs, loss), metric)
            if points is None:
                continue
            colour = colours.shade(runs[0])
            (drawn[label],) = axis.plot(
                points.index, points["mean"], color=colour, label=label, linewidth=1.2, **MARKER
            )
            if len(runs) > 1:
                axis.fill_between(points.index, points["min"], points["max"], color=colour, alpha=0.2)
        axis.set_title(panel_title(metric, loss), fontsize="medium")
        axis.set_xlabel("step")
        plain_numbers(axis)
    seeds = " (mean over seeds, band: min-max)" if "seed" in group.varying else ""
    ordered = [label for label in lines if label in drawn]
    legend(figure, [drawn[label] for label in ordered], ordered)
    figure.suptitle(f"{group.title}: metrics against step{seeds}", fontsize="medium")
    save(figure, path)
    return True


def beta_stats(runs: list[RunRecord], metric: str) -> pd.DataFrame:
    """Mean and sd of `metric` over `runs` at each β, in order of β (empty where none has it)."""
    values = [(run.params.get("beta"), run.final[metric]) for run in runs if metric in run.final]
    points = pd.DataFrame(values, columns=["beta", "value"])
    return points.groupby("beta")["value"].agg(["mean", "std"]).sort_index()


def plot_final_vs_beta(group: RunGroup, path: Path) -> bool:
    """Final metrics against β (per loss for a loss), a line per other setting: mean over seeds,
    bars at ± one sd; a tick at each β that ran."""
    finished = [run for run in group.runs if run.status == "finished"]
    metrics = [name for name in FINAL_METRICS if any(name in run.final for run in finished)]
    betas = sorted({run.params["beta"] for run in finished if "beta" in run.params})
    if len(betas) < 2 or not metrics:
        return False
    lines = series(finished, [key for key in line_keys(group) if key != "beta"])
    colours = RunColours(group)
    layout = panels(finished, metrics, lambda run, metric: metric in run.final)
    figure, axes = grid(len(layout), legend=len(lines) > 1)
    drawn: dict[str, Any] = {}
    for axis, (metric, loss) in zip(axes, layout, strict=True):
        for label, runs in lines.items():
            stats = beta_stats(in_panel(runs, loss), metric)
            if stats.empty:
                continue
            error = stats["std"].fillna(0)
            style = {"marker": "o", "ms": 4, "capsize": 3, "color": colours.hue(runs[0]), "label": label}
            drawn[label] = axis.errorbar(stats.index, stats["mean"], yerr=error, **style)
        axis.set(title=f"final {panel_title(metric, loss)}", xlabel="β")
        beta_axis(axis, betas)
        axis.title.set_fontsize("medium")
        plain_numbers(axis)
    if len(lines) > 1:
        ordered = [label for label in lines if label in drawn]
        legend(figure, [drawn[label] for label in ordered], ordered)
    figure.suptitle(f"{group.title}: final metrics against β (mean ± sd over seeds)", fontsize="medium")
    thin_tick_labels(figure, axes)
    save(figure, path)
    return True


# -- the reward-KL frontier --------------------------------------------------------------------

DIRECTIONS = ((6, 6), (6, -6), (-6, 6), (-6, -6), (0, 9), (0, -9), (9, 0), (-9, 0))  # points
OFFSETS = [(dx * scale, dy * scale) for scale in (1, 2.2, 3.6) for dx, dy in DIRECTIONS]


ALIGN = {1: ("left", "bottom"), -1: ("right", "top"), 0: ("center", "center")}


def sign(value: float) -> int:
    return (value > 0) - (value < 0)


def overlap(box: Bbox, other: Bbox) -> float:
    width = min(box.x1, other.x1) - max(box.x0, other.x0)
    height = min(box.y1, other.y1) - max(box.y0, other.y0)
    return max(width, 0) * max(height, 0)


def place_labels(
    figure: plt.Figure, axis: plt.Axes, points: list[tuple[float, float]], texts: list[str]
) -> list[Any]:
    """Annotate each point with its text where it overlaps no other label and no marker.

    Tries offsets around the point, nearest first; where every one overlaps something, takes the
    one that overlaps least. Returns the annotations.
    """
    figure.canvas.draw()  # lays the figure out, so display coordinates are final
    renderer = figure.canvas.get_renderer()
    frame = axis.get_window_extent(renderer)
    markers = [Bbox.from_bounds(*(axis.transData.transform(point) - 4), 8, 8) for point in points]
    placed: list[Bbox] = []
    annotations = []
    for point, text in zip(points, texts, strict=True):
        best, best_cost = None, math.inf
        for dx, dy in OFFSETS:
            annotation = axis.annotate(
                text,
                point,
                xytext=(dx, dy),
                textcoords="offset points",
                fontsize=8,
                ha=ALIGN[sign(dx)][0],
                va=ALIGN[sign(dy)][1],
            )
            box = annotation.get_window_extent(renderer)
            outside = box.width * box.height - overlap(box, frame)
            cost = sum(overlap(box, other) for other in (*placed, *markers)) + 10 * outside
            if cost < best_cost:
                if best is not None:
                    best[0].remove()
                best, best_cost = (annotation, box), cost
            else:
                annotation.remove()
            if cost == 0:
                break
        annotation, box = best
        annotation.set_in_layout(False)
        placed.append(box)
        annotations.append(annotation)
    return annotations


def frontier_points(group: RunGroup) -> tuple[dict[str, list[RunRecord]], list[str]]:
    runs = [run for run in group.runs if "eval/true_reward" in run.final and "eval/kl" in run.final]
    colour_keys = [key for key in line_keys(group) if key != "beta"]
    return series(runs, colour_keys), ["beta"] if "beta" in group.varying else []


def plot_frontier(group: RunGroup, path: Path) -> bool:
    """True reward against KL to the reference: a point per run, a labelled mean per setting."""
    lines, label_keys = frontier_points(group)
    if not lines:
        return False
    figure = plt.figure(figsize=(PANEL[0] * 2 + LEGEND_WIDTH, PANEL[1] * 2), dpi=DPI)
    axis = figure.add_axes((0.09, 0.11, 0.62, 0.8))
    anchors, texts = [], []
    colours = RunColours(group)
    for label, runs in lines.items():
        colour = colours.hue(runs[0])
        kls = [run.final["eval/kl"] for run in runs]
        rewards = [run.final["eval/true_reward"] for run in runs]
        axis.scatter(kls, rewards, color=colour, s=12, alpha=0.35, linewidths=0)
        means = frontier_means(runs, label_keys)
        axis.plot(means["kl"], means["reward"], "o-", color=colour, markersize=5, linewidth=1, label=label)
        for row in means.itertuples():
            anchors.append((row.kl, row.reward))
            texts.append(row.text)
    references = [run.summary.get("reference", {}) for run in group.runs]
    reference = next((figures for figures in references if "eval/true_reward" in figures), None)
    if reference:
        point = ([reference["eval/kl"]], [reference["eval/true_reward"]])
        axis.scatter(*point, marker="*", s=90, color="black", label="SFT (the reference)", zorder=3)
    axis.set(xlabel="KL(policy ‖ reference), nats per answer", ylabel="true reward")
    axis.set_title(f"{group.title}: reward against KL", fontsize="medium")
    axis.grid(alpha=0.3)
    axis.yaxis.set_major_formatter(FormatStrFormatter("%.3g"))  # the axes' place is fixed: short ticks
    axis.margins(0.12)
    handles, labels = axis.get_legend_handles_labels()
    wrapped = [textwrap.fill(label, 30) for label in labels]
    figure.legend(
        handles, wrapped, loc="upper left", bbox_to_anchor=(0.73, 0.91), fontsize="small", frameon=False
    )
    labelled = [(anchor, text) for anchor, text in zip(anchors, texts, strict=True) if text]
    if labelled:
        place_labels(figure, axis, [anchor for anchor, _ in labelled], [text for _, text in labelled])
    save(figure, path)
    return True


def frontier_means(runs: list[RunRecord], label_keys: list[str]) -> pd.DataFrame:
    """Mean KL and reward per value of the label keys (β), in order of KL; the label text."""
    rows = [(describe(run, label_keys), run.final["eval/kl"], run.final["eval/true_reward"]) for run in runs]
    means = (
        pd.DataFrame(rows, columns=["key", "kl", "reward"])
        .groupby("key", sort=False)[["kl", "reward"]]
        .mean()
        .reset_index()
    )
    means["text"] = means["key"]
    return means.sort_values("kl")
