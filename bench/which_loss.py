"""Which loss, on ground truth: every loss on the built-in experiment, each tuned the same way.

    python bench/which_loss.py                          # tune, then evaluate; table and frontier figure
    python bench/which_loss.py --losses dpo ipo sft     # some losses only
    python bench/which_loss.py --reuse                  # read back runs that finished

1. Tune, on the `tune` prompts: each loss at the 3 points of its strength grid (GRIDS: beta, or the
   one knob a loss without beta has), every other setting the preset's (its learning rate and step
   budget), SFT seeds 0 and 1; the point with the largest mean gain is chosen.
2. Evaluate, on the `eval` prompts: each loss at its chosen point, SFT seeds 0-4.

Seed S is `seed=S sft.seed=S`: each seed has its own SFT model, shared by every loss through the
stage cache. A run's gain is its sampled true reward minus its own SFT model's on the same prompts
(paired). The table gives, per loss, the mean gain over the evaluation seeds with its 95% interval
(Student's t over seeds, so it holds the SFT models' spread too), KL(pi || pi_SFT), and the change
of the held-out pairs' chosen / rejected log-probs from the SFT model. Losses are ranked only where
their difference is clear: a loss's rank is 1 + the number of losses that beat it, A beating B
where the 95% interval of A's gain minus B's, paired by seed, lies above 0; losses share ranks
where no paired interval separates them. The figure plots every loss's reward against its KL (mean
and standard deviation over seeds): the reward-KL frontier of all losses in one figure.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline_table import row, run_one  # noqa: E402

# Each loss's 3-point grid of its strength, around its own scale: the DPO family's beta 1, 2, 4 (the
# preset's 2 in the middle); IPO's tau and SPPO's 1/eta, which set a target of 1/(2 beta), at 0.25,
# 0.5, 1; length-normalised DPO's per-token beta at 2, 5, 10 (open-instruct's default 5); ORPO's
# lambda at 0.1, 0.5, 1; SLiC's margin at 1, 2, 4; SFT and RFT, with no strength, over learning rates.
DPO_FAMILY = ("1", "2", "4")
GRIDS: dict[str, tuple[str, tuple[str, ...]]] = {
    **{
        name: ("beta", DPO_FAMILY)
        for name in (
            "dpo",
            "hinge",
            "robust",
            "exo_pair",
            "discopop",
            "aot",
            "aot_unpaired",
            "nca_pair",
            "bco_pair",
            "apo_zero",
            "apo_down",
            "kto",
            "bco",
            "rpo",
            "cpo",
            "simpo",
            "alphapo",
            "mix",
            "reward_gap_sq",
            "reward_gap_fwd_kl",
            "reward_gap_bwd_kl",
            "reward_scaled",
        )
    },  # fmt: skip
    "ipo": ("beta", ("0.25", "0.5", "1")),
    "sppo_hard": ("beta", ("0.25", "0.5", "1")),
    "sigmoid_norm": ("beta", ("2", "5", "10")),
    "orpo": ("beta", ("0.1", "0.5", "1")),
    "slic": ("loss.margin", ("1", "2", "4")),
    "sft": ("optim.lr", ("2e-4", "4e-4", "8e-4")),
    "rft": ("optim.lr", ("2e-4", "4e-4", "8e-4")),
}
TUNE_SEEDS, EVAL_SEEDS = (0, 1), (0, 1, 2, 3, 4)
# Student's t 0.975 quantiles by degrees of freedom (1-10); beyond, the normal's 1.96 is within 12%.
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def interval(values: list[float]) -> tuple[float, float, float]:
    """(mean, low, high): the 95% Student's t interval of the mean; one value has no width."""
    mean = statistics.mean(values)
    if len(values) < 2:
        return mean, mean, mean
    half = T_975.get(len(values) - 1, 1.96) * statistics.stdev(values) / len(values) ** 0.5
    return mean, mean - half, mean + half


def ranks(gains: dict[str, list[float]]) -> dict[str, int]:
    """1 + how many losses beat this one, paired by seed: A beats B where the 95% interval of A's
    gain minus B's, seed by seed (the same SFT model and prompts), lies above 0. Losses no paired
    interval separates share a rank."""

    def beats(a: list[float], b: list[float]) -> bool:
        return interval([x - y for x, y in zip(a, b, strict=True)])[1] > 0

    return {name: 1 + sum(beats(other, mine) for other in gains.values()) for name, mine in gains.items()}


def choose(points: dict[str, list[float]]) -> str:
    """The grid point with the largest mean gain over the tuning seeds (a tie: the better worst seed)."""
    return max(points, key=lambda point: (round(statistics.mean(points[point]), 3), min(points[point])))


def table(results: dict[str, list[dict]], chosen: dict[str, str]) -> str:
    gains = {name: interval([r["gain"] for r in runs]) for name, runs in results.items()}
    ranking = ranks({name: [r["gain"] for r in runs] for name, runs in results.items()})
    lines = [
        "| rank | loss | chosen | gain (95% interval) | KL | Δlogp chosen | Δlogp rejected | gain per seed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in sorted(results, key=lambda n: (ranking[n], -gains[n][0])):
        runs, (mean, low, high) = results[name], gains[name]

        kl, up, down = (statistics.mean(r[c] for r in runs) for c in ("KL", "Δlogp chosen", "Δlogp rejected"))
        per_seed = ", ".join(f"{r['gain']:+.3f}" for r in runs)
        lines.append(
            f"| {ranking[name]} | {name} | {chosen[name]} | {mean:+.3f} [{low:+.3f}, {high:+.3f}] "
            f"| {kl:.2f} | {up:+.2f} | {down:+.2f} | {per_seed} |"
        )
    return "\n".join(lines)


def spread(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def frontier(results: dict[str, list[dict]], path: Path) -> None:
    """Every loss's true reward against its KL from the SFT model, mean ± sd over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(11, 8))
    for name, runs in sorted(results.items()):
        kls, rewards = [r["KL"] for r in runs], [r["true_reward"] for r in runs]
        axes.errorbar(statistics.mean(kls), statistics.mean(rewards), xerr=spread(kls), yerr=spread(rewards),
                      fmt="o", capsize=2)  # fmt: skip
        axes.annotate(name, (statistics.mean(kls), statistics.mean(rewards)), fontsize=7, xytext=(3, 3),
                      textcoords="offset points")  # fmt: skip
    axes.set_xscale("log")  # most losses sit within 0.1-2 nats; a few collapse to 10+
    axes.set_xlabel("KL(π ‖ π_SFT), nats per answer (log scale)")
    axes.set_ylabel("true reward (sampled, eval prompts)")
    axes.set_title("Reward–KL frontier, every loss at its tuned strength")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def run_grid(name: str, args: argparse.Namespace, common: list[str], root: Path) -> str:
    """Tune one loss: its grid on `tune` over TUNE_SEEDS; the chosen point, as `key=value`."""
    key, values = GRIDS[name]
    points: dict[str, list[float]] = {}
    for value in values:
        for seed in args.tune_seeds:
            overrides = [*common, "evaluate.split=tune", f"loss={name}", f"{key}={value}",
                         f"seed={seed}", f"sft.seed={seed}", *args.overrides]  # fmt: skip
            summary = run_one(
                overrides, root / "tune" / name / f"{key}={value}" / f"seed{seed}", reuse=args.reuse
            )
            points.setdefault(f"{key}={value}", []).append(
                row(summary["metrics"], summary["reference"])["gain"]
            )
    best = choose(points)
    print(f"[which-loss] {name}: tune gains {json.dumps(points)} -> {best}", flush=True)
    return best


def evaluate_loss(
    name: str, point: str, args: argparse.Namespace, common: list[str], root: Path
) -> list[dict]:
    """One loss at its chosen point on `eval`, over the evaluation seeds: each seed's figures."""
    figures = []
    for seed in args.eval_seeds:
        overrides = [*common, "evaluate.split=eval", f"loss={name}", point,
                     f"seed={seed}", f"sft.seed={seed}", *args.overrides]  # fmt: skip
        summary = run_one(overrides, root / "eval" / name / f"seed{seed}", reuse=args.reuse)
        figures.append(row(summary["metrics"], summary["reference"]))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--losses", nargs="+", choices=list(GRIDS), default=list(GRIDS))
    parser.add_argument("--tune-seeds", type=int, nargs="+", default=list(TUNE_SEEDS))
    parser.add_argument("--eval-seeds", type=int, nargs="+", default=list(EVAL_SEEDS))
    parser.add_argument("--output-root", default="outputs/which_loss")
    parser.add_argument(
        "--reuse", action="store_true", help="read back runs that finished with the same overrides"
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run")
    args = parser.parse_args()
    root = Path(args.output_root).resolve()
    common = [f"output_root={root}", f"cache_dir={root / 'cache'}"]
    chosen, results = {}, {}
    for name in args.losses:  # one loss whole (tuned, then evaluated) before the next
        chosen[name] = run_grid(name, args, common, root)
        results[name] = evaluate_loss(name, chosen[name], args, common, root)
        gains = [round(r["gain"], 3) for r in results[name]]
        print(f"[which-loss] {name} at {chosen[name]}: eval gains {gains}", flush=True)
    overrides = " ".join(args.overrides) or "none"
    print(f"\ntune seeds {args.tune_seeds}; eval seeds {args.eval_seeds}; overrides: {overrides}\n")
    print(table(results, chosen))
    frontier(results, root / "frontier.png")
    print(f"\nfrontier: {root / 'frontier.png'}")


if __name__ == "__main__":
    main()
