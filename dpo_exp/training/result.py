"""The block printed when a run ends: what ran, its headline figures with their units, its folder.

```
── result ───────────────────────────────────────────────────────────────
ipo · beta 0.5 · seed 0 · tiny on synthetic · 300 steps in 41 s (5,210 tokens/s)
validation loss (ipo)                                  24.13
validation pairs ranked right by the reward (fraction)        0.625
reward margin, chosen - rejected (beta x per-token log-ratio) 0.118
run folder: outputs/runs/ipo_tiny_synthetic_beta0.5_seed0/20260101-120000
```
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from dpo_exp.data.module import data_label
from dpo_exp.losses import LossSpec, get_loss, takes_beta
from dpo_exp.models.loading import model_label
from dpo_exp.training.metrics_file import METRICS, read_metrics

RULE_WIDTH = 72
NLL_PER_TOKEN = "val/nll_per_token"


def run_figures(spec: LossSpec) -> dict[str, str]:
    """Metric -> its label in the loss's own words, in the order shown: a pair ranking for pairwise
    losses, a side of the reference point for KTO and BCO, the unit of the loss's reward."""
    if spec.paired:
        accuracy = "validation pairs ranked right by the reward (fraction)"
        margin = f"reward margin, chosen - rejected ({spec.reward})"
    else:
        accuracy = "validation examples on their label's side of the reference point (fraction)"
        margin = f"reward, desirable - undesirable examples ({spec.reward})"
    # Fine-tuning on desirable completions alone (SFT on demonstrations, RFT): nothing is ranked, and
    # the figure is the completions' NLL per token (token-weighted; its exp is the perplexity).
    fine_tuning = {NLL_PER_TOKEN: "validation NLL per completion token"} if spec.positives_only else {}
    return {
        **fine_tuning,
        "val/loss": f"validation loss ({spec.name})",
        "val/rewards/accuracy": accuracy,
        "val/rewards/margin": margin,
    }


def value_at_step_zero(run_dir: str, name: str) -> float | None:
    """`name`'s value in the validation at step 0 (metrics.csv), where the run has one."""
    path = Path(run_dir) / METRICS
    if not path.exists():
        return None
    metrics = read_metrics(path)
    if name not in metrics.columns:
        return None
    at_zero = metrics[metrics["step"] == 0][name].dropna()
    return None if at_zero.empty else float(at_zero.iloc[0])


def rule(title: str) -> str:
    return f"── {title} " + "─" * max(RULE_WIDTH - len(title) - 4, 0)


def what_ran(cfg: DictConfig, summary: dict[str, Any], seconds: float) -> str:
    """`dpo · beta 2.0 · seed 0 · tiny on arithmetic · 400 steps, 31 s (12,723 tokens/s)`."""
    parts = [str(summary["loss"])]
    if takes_beta(str(summary["loss"])):
        parts.append(f"beta {summary['beta']:g}")
    parts += [f"seed {summary['seed']}", f"{model_label(cfg.model)} on {data_label(cfg.data)}"]
    training = summary.get("wall_time_s", seconds)
    speed = f"{summary['global_step']} steps in {training:.0f} s"
    if summary.get("tokens_per_s"):
        speed += f" ({summary['tokens_per_s']:,.0f} tokens/s)"
    if seconds - training >= 1:
        speed += f", whole job {seconds:.0f} s"
    return " · ".join([*parts, speed])


def figure_rows(rows: list[tuple[str, list[str]]]) -> list[str]:
    """Label and value columns, aligned."""
    width = max((len(label) for label, _ in rows), default=0)
    return [f"{label:<{width}}  " + "  ".join(f"{value:>8}" for value in values) for label, values in rows]


def footer(summary: dict[str, Any]) -> list[str]:
    lines = []
    if summary.get("skipped_steps"):
        lines.append(f"skipped steps (non-finite gradients): {summary['skipped_steps']}")
    if summary.get("scaler_skipped_steps"):
        lines.append(f"steps the loss scaler skipped (fp16 overflow): {summary['scaler_skipped_steps']}")
    if summary.get("wandb_run_dir"):
        folder = summary["wandb_run_dir"]
        sync = "" if summary.get("wandb_online") else f" (to upload: wandb sync {folder})"
        lines.append(f"W&B run: {folder}{sync}")
    lines.append(f"run folder: {summary['run_dir']}")
    return lines


def generation_rows(generation: dict[str, Any] | None) -> list[tuple[str, list[str]]]:
    """Generation-scored figures (`evaluate.reward`), step 0 -> end: `0.5 -> 0.62 [0.55, 0.69]`."""
    if not generation or "final" not in generation:
        return []
    start, end = generation.get("step0", {}), generation["final"]

    def span(name: str) -> str:
        first = f"{start[name]:.4g} -> " if name in start else ""
        return f"{first}{end[name]:.4g}"

    interval = f" [{end['win_rate_ci95_low']:.3g}, {end['win_rate_ci95_high']:.3g}]"
    return [
        (f"reward of samples, step 0 -> end ({generation['reward']})", [span("reward")]),
        ("win rate against the reference's samples [95% interval]", [span("win_rate") + interval]),
        ("KL(policy || reference) on its samples, nats per answer", [span("kl")]),
    ]


def run_result(cfg: DictConfig, summary: dict[str, Any], seconds: float) -> str:
    """The result block of one run on a fixed dataset."""
    metrics = summary["metrics"]
    figures = run_figures(get_loss(str(summary["loss"])))
    rows = [(label, [f"{metrics[name]:.4g}"]) for name, label in figures.items() if name in metrics]
    if NLL_PER_TOKEN in figures and NLL_PER_TOKEN in metrics:
        start = value_at_step_zero(summary["run_dir"], NLL_PER_TOKEN)
        if start is not None:  # where it started, beside where it ended: what the fine-tuning changed
            label = figures[NLL_PER_TOKEN]
            rows[0] = (f"{label}, step {summary['global_step']}", rows[0][1])
            rows.insert(0, (f"{label}, step 0", [f"{start:.4g}"]))
    rows += generation_rows(summary.get("generation"))
    lines = [rule("result"), what_ran(cfg, summary, seconds), *figure_rows(rows), *footer(summary)]
    return "\n".join(lines)


def evaluation_result(record: dict[str, Any], path: str) -> str:
    """The result block of `dpo-exp evaluate`: what was compared on what, its validation figures in
    the loss's own words, and the file they were written to."""
    policy, data, reference = record["policy"], record["data"], record["reference"]
    what = [str(record["loss"])]
    if record.get("beta") is not None:
        what.append(f"beta {record['beta']:g}")
    unit = "pairs" if record["paired"] else "examples"
    what.append(f"{data['rows']} {unit} of {data['name']}")
    step = f" (step {policy['step']})" if policy.get("step") is not None else ""
    against = (
        "no reference"
        if reference is None
        else f"reference: {reference['kind']} {reference.get('path') or ''}"
    )
    metrics = record["metrics"]
    figures = run_figures(get_loss(str(record["loss"])))
    rows = [(label, [f"{metrics[name]:.4g}"]) for name, label in figures.items() if name in metrics]
    lines = [
        rule("evaluation"),
        " · ".join(what),
        f"policy: {policy['kind']} {policy['path']}{step}",
        against.rstrip(),
        *figure_rows(rows),
        f"written: {path}",
    ]
    return "\n".join(lines)
