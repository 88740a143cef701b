"""compare on hand-written run folders: groups, what differs, best values, fixed-size plots, labels
that do not overlap, and one self-contained HTML page."""

from __future__ import annotations

import base64
import itertools
import json
import re
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import pytest
import yaml
from matplotlib.colors import to_hex
from PIL import Image

from dpo_exp.report import plots
from dpo_exp.report.compare import (
    build_table,
    compare,
    group_runs,
    read_runs,
    read_wandb_runs,
    varying_params,
)
from dpo_exp.report.plots import overlap, place_labels, series
from dpo_exp.report.runs import useful_params, wandb_metrics
from dpo_exp.training.run_files import write_failure


def write_run(
    root: Path,
    name: str,
    *,
    loss: str,
    beta: float,
    seed: int,
    val_losses: list[float],
    lr=5e-4,
    sections: dict | None = None,
    **final,
):
    """A finished run's folder; `sections` adds config sections (`{"speed": {"pack": True}}`)."""
    run_dir = root / name
    run_dir.mkdir(parents=True)
    config = {"loss": {"name": loss}, "beta": beta, "seed": seed, "optim": {"lr": lr}, "run_name": name}
    config.update(sections or {})
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    steps = list(range(len(val_losses)))
    pd.DataFrame({"step": steps, "val/loss": val_losses}).to_csv(run_dir / "metrics.csv", index=False)
    metrics = {"val/loss": val_losses[-1], **final}
    summary = {"metrics": metrics, "wall_time_s": 10.0, "tokens_per_s": 100.0}
    (run_dir / "summary.json").write_text(json.dumps(summary))


@pytest.fixture
def runs_root(tmp_path: Path) -> Path:
    for seed, reward in ((0, 0.6), (1, 0.8)):
        write_run(tmp_path, f"dpo_s{seed}", loss="dpo", beta=0.1, seed=seed, val_losses=[0.69, 0.5, 0.55],
                  **{"eval/true_reward": reward, "eval/kl": 2.0})  # fmt: skip
    write_run(tmp_path, "ipo_s0", loss="ipo", beta=0.5, seed=0, val_losses=[25.0, 20.0],
              **{"eval/true_reward": 0.7, "eval/kl": 1.0})  # fmt: skip
    failed = tmp_path / "dpo_bad"
    failed.mkdir()
    (failed / "failed.txt").write_text("ConfigError: beta must be a finite number > 0, got -1\n")
    return tmp_path


def test_the_table_has_a_row_per_run_and_the_varying_hyperparameters(runs_root: Path):
    runs = read_runs(runs_root)
    assert varying_params(runs) == ["loss.name", "beta", "seed"]  # optim.lr and run_name do not count
    table = build_table(runs, runs_root).set_index("run")
    assert table.loc["dpo_s0", "best val/loss"] == 0.5  # the minimum over evaluations, not the last
    assert table.loc["dpo_s0", "val/loss"] == 0.55
    assert table.loc["dpo_bad", "status"] == "failed" and "beta must be" in table.loc["dpo_bad", "error"]
    assert table.loc["ipo_s0", "eval/true_reward"] == 0.7


def test_a_failed_run_s_cell_is_its_message_s_first_line_and_a_continued_run_is_listed_once(tmp_path: Path):
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    error = ValueError("bad value\nsecond line")
    try:
        raise error
    except ValueError:
        write_failure(crashed, error)
    assert "Traceback" in (crashed / "failed.txt").read_text()  # failed.txt keeps it, the table does not
    stopped = tmp_path / "stopped"  # stopped, then continued to its end in another folder
    stopped.mkdir()
    (stopped / "failed.txt").write_text("stopped by SIGINT; resumable (resume=auto)\n")
    (stopped / "finished_in.txt").write_text(f"{tmp_path / 'dpo_s0'}\n")
    write_run(tmp_path, "dpo_s0", loss="dpo", beta=0.1, seed=0, val_losses=[0.69, 0.5])
    table = build_table(read_runs(tmp_path), tmp_path).set_index("run")
    assert sorted(table.index) == ["crashed", "dpo_s0"]
    assert table.loc["crashed", "error"] == "ValueError: bad value"


def test_compare_writes_every_plot_when_runs_carry_true_reward_and_kl(runs_root: Path):
    compare(runs_root)
    out = runs_root / "compare"
    # The failed run wrote no config: it shares nothing with the others, so it is a group of its own.
    (finished,) = [g for g in group_runs(read_runs(runs_root), runs_root) if len(g.runs) == 3]
    for name in ("metrics_vs_step", "final_vs_beta", "frontier"):
        assert (out / f"group{finished.number}_{name}.png").stat().st_size > 0, name
    for name in ("runs.csv", "runs.md", "report.html"):
        assert (out / name).stat().st_size > 0, name
    markdown = (out / "runs.md").read_text()
    assert markdown.count("\n## ") + markdown.startswith("## ") == 2  # a section per group
    assert "| loss | β | seed | status |" in markdown  # what differs in the group, short names first


def test_runs_read_from_the_wandb_api_fill_the_same_table(tmp_path: Path, monkeypatch):
    """A stand-in for wandb.Api: the API itself needs a network and a login."""

    class FakeRun:
        def __init__(self, name, loss, beta, state):
            self.name, self.state = name, state
            self.config = {"loss.name": loss, "beta": beta, "run_name": name}
            self.summary = {"val/loss": 0.4, "_runtime": 12.0, "_step": 3}

        def history(self, pandas=True):
            return pd.DataFrame({"_step": [1, 3], "val/loss": [0.6, 0.4]})

    class FakeApi:
        def runs(self, path, filters):
            assert (path, filters) == ("me/dpo_exp", {"group": "20260101-000000"})
            return [FakeRun("a", "dpo", 0.1, "finished"), FakeRun("b", "ipo", 0.1, "crashed")]

    import wandb

    monkeypatch.setattr(wandb, "Api", FakeApi)
    runs = read_wandb_runs("me/dpo_exp", "20260101-000000")
    table = compare(tmp_path, runs=runs).set_index("run")
    assert list(table.index) == ["a", "b"] and list(table["loss.name"]) == ["dpo", "ipo"]
    assert list(table["status"]) == ["finished", "failed"]
    assert table.loc["a", "best val/loss"] == 0.4 and table.loc["a", "wall_time_s"] == 12.0
    assert (tmp_path / "compare" / "group1_metrics_vs_step.png").exists()


def test_a_wandb_figure_kept_with_its_best_value_reads_back_as_its_last():
    summary = {"val/loss": {"min": 0.3, "last": 0.4}, "train/loss": 0.5, "_runtime": 12.0, "eval/samples": {}}
    assert wandb_metrics(summary) == {"val/loss": 0.4, "train/loss": 0.5}


def test_an_online_runs_earlier_rounds_are_part_of_it_not_runs_of_their_own(tmp_path: Path):
    write_run(tmp_path, "online", loss="dpo", beta=2.0, seed=0, val_losses=[0.69, 0.4])
    write_run(tmp_path / "online" / "rounds", "1", loss="dpo", beta=2.0, seed=0, val_losses=[0.69, 0.5])
    assert [run.path.name for run in read_runs(tmp_path)] == ["online"]


def mark_sweep(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "multirun.yaml").write_text("hydra: {}\n")  # what Hydra leaves in a multirun's folder


@pytest.fixture
def mixed_root(tmp_path: Path) -> Path:
    """A β × loss sweep, a seed sweep, two single runs that differ in loss only, one with another lr."""
    grid = tmp_path / "sweeps" / "grid"
    mark_sweep(grid)
    for number, (beta, loss) in enumerate(itertools.product((0.1, 0.5, 2.0), ("dpo", "ipo"))):
        final = {"eval/true_reward": 0.5 + beta / 10, "eval/kl": 1 / beta}
        write_run(
            grid,
            f"{number}_beta={beta},loss={loss}",
            loss=loss,
            beta=beta,
            seed=0,
            val_losses=[0.69, 0.5],
            **final,
        )
    seeds = tmp_path / "sweeps" / "seeds"
    mark_sweep(seeds)
    for seed in range(3):
        write_run(
            seeds, f"{seed}_seed={seed}", loss="dpo", beta=2.0, seed=seed, val_losses=[0.69, 0.4 + seed / 10]
        )
    runs = tmp_path / "runs"
    write_run(runs, "dpo_single", loss="dpo", beta=0.1, seed=0, val_losses=[0.69, 0.6])
    write_run(runs, "ipo_single", loss="ipo", beta=0.1, seed=0, val_losses=[25.0, 20.0])
    write_run(runs, "dpo_other_lr", loss="dpo", beta=0.1, seed=0, val_losses=[0.69, 0.3], lr=1e-3)
    return tmp_path


def test_runs_are_grouped_by_what_they_share(mixed_root: Path):
    groups = {group.title: group for group in group_runs(read_runs(mixed_root), mixed_root)}
    assert sorted(groups) == [
        "single runs (1 run)",
        "single runs (2 runs)",
        "sweep sweeps/grid (6 runs)",
        "sweep sweeps/seeds (3 runs)",
    ]
    assert groups["sweep sweeps/grid (6 runs)"].varying == ["loss.name", "beta"]
    assert groups["sweep sweeps/seeds (3 runs)"].varying == ["seed"]
    assert groups["sweep sweeps/seeds (3 runs)"].shared == {"beta": 2.0, "loss.name": "dpo", "optim.lr": 5e-4}
    assert groups["single runs (2 runs)"].varying == ["loss.name"]
    assert groups["single runs (1 run)"].shared["optim.lr"] == 1e-3  # what sets it apart


def png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size


def test_plots_keep_one_readable_size_however_many_runs(mixed_root: Path, tmp_path: Path):
    big = tmp_path / "big"  # 36 runs of the two losses of the 6-run grid in mixed_root
    mark_sweep(big)
    for number, (beta, loss, seed) in enumerate(
        itertools.product((0.01, 0.1, 0.5, 1, 2, 4), ("dpo", "ipo"), (0, 1, 2))
    ):
        write_run(big, f"{number}_member", loss=loss, beta=beta, seed=seed, val_losses=[0.69, 0.5, 0.4],
                  **{"eval/true_reward": 0.5, "eval/kl": 1.0})  # fmt: skip
    compare(big)
    compare(mixed_root)
    names = ("metrics_vs_step", "final_vs_beta")
    sizes = {name: png_size(big / "compare" / f"group1_{name}.png") for name in names}
    # val/loss, a panel per loss: two 3.6 x 2.6 in panels and a 2.8 in legend; 100 dpi
    assert sizes["metrics_vs_step"] == (1000, 300)
    # val/loss per loss, true reward, KL: 4 panels, 3 to a row, the legend
    assert sizes["final_vs_beta"] == (1360, 560)
    small = {name: png_size(mixed_root / "compare" / f"group1_{name}.png") for name in names}  # 6-run grid
    assert small == sizes
    for path in [*(big / "compare").glob("*.png"), *(mixed_root / "compare").glob("*.png")]:
        assert png_size(path)[0] < 2000, path


def test_frontier_labels_overlap_neither_each_other_nor_the_points():
    figure = plt.figure(figsize=(6, 4), dpi=100)
    axis = figure.add_axes((0.1, 0.1, 0.8, 0.8))
    points = [(1.0 + 0.02 * i, 0.5 + 0.004 * (i % 3)) for i in range(8)] + [(3.0, 0.9), (3.05, 0.9)]
    axis.scatter(*zip(*points, strict=True))
    axis.margins(0.2)
    labels = place_labels(figure, axis, points, [f"β={i / 10:g}" for i in range(len(points))])
    boxes = [label.get_window_extent(figure.canvas.get_renderer()) for label in labels]
    assert all(overlap(a, b) == 0 for a, b in itertools.combinations(boxes, 2))
    markers = [axis.transData.transform(point) for point in points]
    assert not any(box.x0 < x < box.x1 and box.y0 < y < box.y1 for box in boxes for x, y in markers)
    frame = axis.get_window_extent(figure.canvas.get_renderer())
    assert all(
        frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
        for box in boxes
    )
    plt.close(figure)


def test_report_html_holds_every_table_and_plot_in_one_file(mixed_root: Path):
    compare(mixed_root)
    out = mixed_root / "compare"
    page = (out / "report.html").read_text()
    # A table per group, and the seed sweep's mean ± sd over its seeds.
    assert page.count("<section>") == 4 and page.count("<table>") == 5
    images = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([^"]+)">', page)
    assert sorted(name for name, _ in images) == sorted(path.stem for path in out.glob("group*.png"))
    assert all(base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n" for _, data in images)
    assert not re.search(r'src="(?!data:)', page)  # nothing fetched from elsewhere
    # Each run's name links to its folder, relative to the page: it opens after the folder moves.
    links = dict((name, href) for href, name in re.findall(r'<a href="([^"]+)">([^<]+)</a>', page))
    assert len(links) == 12 and links["runs/dpo_single"] == "../runs/dpo_single/"
    assert all((out / href / "summary.json").exists() for href in links.values())
    assert "0_beta=0.1,loss=dpo" in page and "Shared: loss=dpo, β=2" in page


def test_only_settings_that_decide_what_a_run_learns_are_compared():
    experiment = {"task.name": "arithmetic", "sft.steps": 600, "model.path": "/cache/sft/ab/model",
                  "data.train_path": "/cache/sample/cd/pairs.jsonl", "loss.name": "rft", "beta": 2.0,
                  "output_root": "outputs", "logger.name": "csv", "optim.lr": 2e-4}  # fmt: skip
    assert useful_params(experiment) == {"task.name": "arithmetic", "sft.steps": 600, "loss.name": "rft",
                                         "optim.lr": 2e-4}  # fmt: skip
    fixed = {
        "data.train_path": "prefs.jsonl",
        "sft.steps": 600,
        "online.rounds": 1,
        "loss.name": "dpo",
        "beta": 0.1,
    }
    assert useful_params(fixed) == {"data.train_path": "prefs.jsonl", "loss.name": "dpo", "beta": 0.1}
    # scored by a reward: what scored it, on which prompts, at which temperature, decides the figures
    scored = {**fixed, "evaluate.reward": "rm", "evaluate.temperature": 0.7, "evaluate.table_size": 8}
    assert useful_params(scored) == {
        **useful_params(fixed),
        "evaluate.reward": "rm",
        "evaluate.temperature": 0.7,
    }


def test_beta_is_a_column_when_a_loss_without_one_sits_beside_a_loss_with_one(tmp_path: Path):
    write_run(tmp_path, "dpo", loss="dpo", beta=1.0, seed=0, val_losses=[0.69, 0.5])
    write_run(tmp_path, "rft", loss="rft", beta=2.0, seed=0, val_losses=[2.0, 1.5])
    runs = read_runs(tmp_path)
    assert "beta" not in runs[1].params  # rft: no beta
    assert varying_params(runs) == ["loss.name", "beta"]
    (group,) = group_runs(runs, tmp_path)
    assert list(series(group.runs, group.varying)) == ["loss=dpo β=1", "loss=rft"]
    compare(tmp_path)
    assert not (tmp_path / "compare" / "group1_final_vs_beta.png").exists()  # one β: no line to draw


def test_runs_that_differ_only_in_speed_switches_are_one_group_and_one_line(tmp_path: Path):
    """Switches documented as "same numbers, only faster" split no group; the table still says which
    run took which path. trainer.precision changes the numbers: it still sets a run apart."""
    fast = {"speed": {"pack": True, "logits_chunk": 256, "share_prompt": True}, "reference": {"cache": True},
            "model": {"name": "tiny", "activation_checkpointing": True}}  # fmt: skip
    slow = {"speed": {"pack": False, "logits_chunk": None, "share_prompt": False},
            "reference": {"cache": False},
            "model": {"name": "tiny", "activation_checkpointing": False}}  # fmt: skip
    write_run(tmp_path, "fast", loss="dpo", beta=0.1, seed=0, val_losses=[0.69, 0.5], sections=fast)
    write_run(tmp_path, "slow", loss="dpo", beta=0.1, seed=1, val_losses=[0.69, 0.6], sections=slow)
    bf16 = {**slow, "trainer": {"precision": "bf16-mixed"}}
    write_run(tmp_path, "bf16", loss="dpo", beta=0.1, seed=0, val_losses=[0.69, 0.6], sections=bf16)
    runs = read_runs(tmp_path)
    groups = group_runs(runs, tmp_path)
    (pair,) = [group for group in groups if len(group.runs) == 2]
    assert sorted(run.path.name for run in pair.runs) == ["fast", "slow"] and pair.varying == ["seed"]
    assert len(groups) == 2  # bf16 apart: another precision, other numbers
    assert list(series(pair.runs, [key for key in pair.varying if key != "seed"])) == ["mean of 2 runs"]
    compare(tmp_path)
    markdown = (tmp_path / "compare" / "runs.md").read_text()
    assert "speed.pack" in markdown and "reference.cache" in markdown  # which run took which path


def test_a_loss_by_beta_by_seed_sweep_folds_seeds_into_mean_and_sd_per_setting(tmp_path: Path):
    sweep = tmp_path / "sweep"
    mark_sweep(sweep)
    for number, (loss, beta, seed) in enumerate(itertools.product(("dpo", "ipo", "kto"), (0.1, 0.5), (0, 1))):
        final_loss = 0.5 + beta + 0.1 * seed  # seeds 0 and 1: mean 0.55 + beta, sd 0.1 / sqrt(2)
        write_run(sweep, f"{number}_member", loss=loss, beta=beta, seed=seed, val_losses=[0.69, final_loss],
                  **{"val/rewards/accuracy": 0.5 + 0.25 * seed})  # fmt: skip
    write_run(sweep, "12_member", loss="dpo", beta=2.0, seed=0, val_losses=[0.69, 0.4])  # one seed only
    compare(sweep)
    stats = pd.read_csv(sweep / "compare" / "seeds.csv")
    assert len(stats) == 7 and list(stats.columns[:3]) == ["loss", "β", "runs"]
    row = stats.set_index(["loss", "β"]).loc[("ipo", 0.5)]
    assert row["runs"] == 2
    assert row["val/loss mean"] == pytest.approx(1.05)
    assert row["val/loss sd"] == pytest.approx(0.1 / 2**0.5)
    assert row["val/rewards/accuracy mean"] == pytest.approx(0.625)
    alone = stats.set_index(["loss", "β"]).loc[("dpo", 2.0)]
    assert alone["runs"] == 1 and alone["val/loss mean"] == 0.4 and pd.isna(alone["val/loss sd"])
    markdown = (sweep / "compare" / "runs.md").read_text()
    assert "| loss | β | runs | val/loss | val/rewards/accuracy |" in markdown
    assert "| ipo | 0.5 | 2 | 1.05 ± 0.071 | 0.625 ± 0.18 |" in markdown
    assert "| dpo | 2 | 1 | 0.4 |  |" in markdown  # a single run: its value, no sd
    assert "1.05 ± 0.071" in (sweep / "compare" / "report.html").read_text()


def test_no_seed_table_where_every_setting_ran_once(tmp_path: Path):
    write_run(tmp_path, "dpo", loss="dpo", beta=0.1, seed=0, val_losses=[0.69, 0.5])
    write_run(tmp_path, "ipo", loss="ipo", beta=0.1, seed=1, val_losses=[25.0, 20.0])
    compare(tmp_path)
    assert not (tmp_path / "compare" / "seeds.csv").exists()
    assert "Seeds folded" not in (tmp_path / "compare" / "runs.md").read_text()


@pytest.fixture
def figures(monkeypatch) -> dict[str, plt.Figure]:
    """The figures compare draws, by file stem, kept open to be read (their files left empty)."""
    drawn: dict[str, plt.Figure] = {}

    def keep(figure: plt.Figure, path: Path) -> None:
        drawn[path.stem] = figure
        path.write_bytes(b"")

    monkeypatch.setattr(plots, "save", keep)
    yield drawn
    plt.close("all")


def curves(figure: plt.Figure) -> dict[str, dict[str, plt.Line2D]]:
    """Panel title -> {legend label -> its line}."""
    return {
        axis.get_title(): {
            line.get_label(): line for line in axis.get_lines() if not line.get_label().startswith("_")
        }
        for axis in figure.axes
        if axis.get_visible() and axis.get_title()
    }


def test_curves_start_at_step_0_with_a_marker_at_each_evaluation(tmp_path: Path, figures):
    write_run(tmp_path, "once", loss="dpo", beta=0.1, seed=0, val_losses=[0.69])  # validated at step 0 only
    write_run(tmp_path, "twice", loss="dpo", beta=0.5, seed=0, val_losses=[0.69, 0.5])
    compare(tmp_path)
    (panel,) = curves(figures["group1_metrics_vs_step"]).values()
    assert list(panel["β=0.1"].get_xdata()) == [0] and list(panel["β=0.5"].get_xdata()) == [0, 1]
    assert all(
        line.get_marker() not in (None, "None", "") and line.get_markersize() > 0 for line in panel.values()
    )


def test_each_loss_gets_its_own_loss_panel_and_other_metrics_stay_shared(tmp_path: Path, figures):
    write_run(tmp_path, "dpo", loss="dpo", beta=0.1, seed=0, val_losses=[0.69, 0.2], **{"eval/kl": 1.0})
    write_run(tmp_path, "ipo", loss="ipo", beta=0.1, seed=0, val_losses=[25.0, 48.0], **{"eval/kl": 2.0})
    for run in ("dpo", "ipo"):  # an accuracy column beside the loss
        metrics = pd.read_csv(tmp_path / run / "metrics.csv").assign(**{"val/rewards/accuracy": [0.5, 0.7]})
        metrics.to_csv(tmp_path / run / "metrics.csv", index=False)
    compare(tmp_path)
    panels = curves(figures["group1_metrics_vs_step"])
    assert list(panels) == ["val/loss (dpo)", "val/loss (ipo)", "val/rewards/accuracy"]
    assert list(panels["val/loss (dpo)"]) == ["loss=dpo"] and list(panels["val/loss (ipo)"]) == ["loss=ipo"]
    assert list(panels["val/rewards/accuracy"]) == ["loss=dpo", "loss=ipo"]


def test_a_run_keeps_its_colour_in_every_figure_and_beta_shades_it(tmp_path: Path, figures):
    sweep = tmp_path / "sweep"
    mark_sweep(sweep)
    for number, (loss, beta) in enumerate(itertools.product(("dpo", "ipo"), (0.1, 1.0))):
        final = {"eval/true_reward": 0.5 + beta, "eval/kl": 1 + beta}
        if (loss, beta) == ("dpo", 0.1):
            final = {}  # no true reward: the frontier's first line is ipo's
        write_run(sweep, f"{number}_m", loss=loss, beta=beta, seed=0, val_losses=[0.69, 0.5], **final)
    compare(sweep)
    steps = curves(figures["group1_metrics_vs_step"])["val/loss (ipo)"]
    (against_beta,) = [
        axis for axis in figures["group1_final_vs_beta"].axes if axis.get_title() == "final eval/kl"
    ]
    (frontier,) = figures["group1_frontier"].axes
    hue = labelled_colours(against_beta)["loss=ipo"]
    assert labelled_colours(frontier)["loss=ipo"] == hue  # the same, though the frontier's first line
    assert to_hex(steps["loss=ipo β=1"].get_color()) == hue  # the largest β: the hue itself
    assert to_hex(steps["loss=ipo β=0.1"].get_color()) != hue  # a smaller β: a lighter shade of it


def labelled_colours(axis: plt.Axes) -> dict[str, str]:
    """Legend label -> colour of each line and error-bar line on `axis`."""
    lines = {line.get_label(): line for line in axis.get_lines()}
    lines.update({container.get_label(): container.lines[0] for container in axis.containers})
    return {label: to_hex(line.get_color()) for label, line in lines.items() if not label.startswith("_")}


def test_beta_ticks_are_the_betas_that_ran_written_plainly_and_never_overlap(tmp_path: Path, figures):
    betas = (0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0)
    for beta in betas:
        write_run(tmp_path, f"b{beta}", loss="dpo", beta=beta, seed=0, val_losses=[0.69, 0.5 - beta / 20])
    compare(tmp_path)
    figure = figures["group1_final_vs_beta"]
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    (axis,) = [axis for axis in figure.axes if axis.get_visible()]
    shown = [label for label in axis.get_xticklabels() if label.get_text()]
    assert {label.get_text() for label in shown} <= {f"{beta:g}" for beta in betas}
    assert {"0.01", "5"} <= {label.get_text() for label in shown} and len(shown) >= 5
    boxes = [label.get_window_extent(renderer) for label in shown]
    assert all(overlap(a, b) == 0 for a, b in itertools.combinations(boxes, 2))
