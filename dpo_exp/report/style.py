"""What keeps a group's figures readable together: one colour per run in every figure, β ticks
written as the β values, and tick labels that never overlap.

A run's colour comes from its settings, not from its place in one figure's list: its hue from what
differs in the group but β and the seed (the loss, say), the same hue in every figure of the group;
where β differs, the shade from its β (darker for a larger β), so the curves of one run across
figures, and its points against β, are told apart by the same colour.
"""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
from matplotlib.colors import to_rgb
from matplotlib.ticker import NullLocator

from dpo_exp.report.runs import RunGroup, RunRecord

LIGHTEST = 0.45  # the smallest β's share of its hue (the rest white): still readable on white


def palette(count: int) -> list[Any]:
    cmap = plt.get_cmap("tab10" if count <= 10 else "tab20" if count <= 20 else "viridis")
    return [cmap(i if count <= 20 else i / max(count - 1, 1)) for i in range(count)]


class RunColours:
    """The colour of each run of `group`, the same in every figure drawn of it."""

    def __init__(self, group: RunGroup) -> None:
        self.hue_keys = [key for key in group.varying if key not in ("beta", "seed")]
        hues = list(dict.fromkeys(self.hue_key(run) for run in group.runs))
        self.hues = dict(zip(hues, palette(len(hues)), strict=True))
        self.betas = sorted({run.params["beta"] for run in group.runs if "beta" in run.params})

    def hue_key(self, run: RunRecord) -> tuple:
        return tuple(repr(run.params.get(key)) for key in self.hue_keys)

    def hue(self, run: RunRecord) -> Any:
        """For a figure whose lines hold every β of a setting (final metrics against β, the frontier)."""
        return self.hues[self.hue_key(run)]

    def shade(self, run: RunRecord) -> Any:
        """For a figure with a line per β: the hue, lighter for a smaller β."""
        hue = self.hue(run)
        if len(self.betas) < 2 or "beta" not in run.params:
            return hue
        share = LIGHTEST + (1 - LIGHTEST) * self.betas.index(run.params["beta"]) / (len(self.betas) - 1)
        return tuple(share * channel + (1 - share) for channel in to_rgb(hue))


def beta_axis(axis: plt.Axes, betas: list[float]) -> None:
    """A log β axis whose ticks are the β values that ran, written plainly (0.05, not 5×10⁻²)."""
    axis.set_xscale("log")
    axis.set_xticks(betas, labels=[f"{beta:g}" for beta in betas])
    axis.xaxis.set_minor_locator(NullLocator())  # log minor ticks carry labels that collide


def thin_tick_labels(figure: plt.Figure, axes: list[plt.Axes]) -> None:
    """Blank each x tick label that would overlap the last one kept, left to right (β values close
    on a log axis); needs the figure laid out, so call it last before saving."""
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    for axis in axes:
        ticks = list(axis.get_xticks())
        labels = axis.get_xticklabels()
        shown, kept = [], None
        for label in labels:
            box = label.get_window_extent(renderer)
            overlaps = kept is not None and box.x0 < kept.x1 + 4  # 4 pixels between labels
            shown.append("" if overlaps else label.get_text())
            kept = kept if overlaps or not label.get_text() else box
        axis.set_xticks(ticks, labels=shown)
