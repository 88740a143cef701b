"""The reward-KL frontier of runs evaluated by generation (`evaluate.reward`), whatever their loss.

Each run is a line through its evaluations in order of step, from step 0 (a hollow marker: the
policy is the reference there, KL 0) to its end (a filled marker, in its legend entry), in the run's
colour from `RunColours`: the DPO paper's reward against KL(policy ‖ reference), a curve per run.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from dpo_exp.report.plots import DPI, LEGEND_WIDTH, PANEL, describe, has_history, legend, plain_numbers, save
from dpo_exp.report.runs import RunGroup, RunRecord
from dpo_exp.report.style import RunColours

REWARD, KL = "eval/reward", "eval/kl"


def evaluations(run: RunRecord) -> pd.DataFrame:
    """The run's (step, KL, reward) at each evaluation, in order of step."""
    assert run.history is not None
    return run.history[["step", KL, REWARD]].dropna().drop_duplicates("step", keep="last").sort_values("step")


def plot_reward_kl(group: RunGroup, path: Path) -> bool:
    """Reward of samples against KL to the reference: a line per run, step 0 to its end."""
    runs = [run for run in group.runs if has_history(run, REWARD) and has_history(run, KL)]
    runs = [run for run in runs if not evaluations(run).empty]
    if not runs:
        return False
    figure = plt.figure(figsize=(PANEL[0] * 2 + LEGEND_WIDTH, PANEL[1] * 2), dpi=DPI)
    axis = figure.add_axes((0.12, 0.11, 0.59, 0.8))  # room for long reward ticks
    colours = RunColours(group)
    handles, labels = [], []
    for run in runs:
        points, colour = evaluations(run), colours.shade(run)
        axis.plot(points[KL], points[REWARD], "-", color=colour, linewidth=1, alpha=0.7)
        axis.scatter(points[KL][:-1], points[REWARD][:-1], color=colour, s=10, alpha=0.6, linewidths=0)
        start = points[points["step"] == 0]
        axis.scatter(start[KL], start[REWARD], s=40, facecolors="none", edgecolors=colour, zorder=3)
        (end,) = axis.plot(points[KL].iloc[-1:], points[REWARD].iloc[-1:], "o", color=colour, markersize=6)
        handles.append(end)
        labels.append(describe(run, group.varying) or "the run")
    handles.append(plt.Line2D([], [], marker="o", markerfacecolor="none", color="grey", linestyle="none"))
    labels.append("step 0 (policy = reference)")
    axis.set(xlabel="KL(policy ‖ reference) on its samples, nats per answer", ylabel="reward of samples")
    axis.set_title(f"{group.title}: reward against KL, step 0 to end", fontsize="medium")
    plain_numbers(axis)  # rewards a few 1e-4 apart stay told apart
    axis.margins(0.12)
    legend(figure, handles, labels)
    save(figure, path)
    return True
