"""Iterative preference training on the built-in experiment, round by round, in Markdown.

    python bench/iterative_table.py                                   # 3 rounds, seeds 0 1 2
    python bench/iterative_table.py --seeds 0 --steps 100             # a quicker look
    python bench/iterative_table.py online.rounds=2 --methods rpo     # Hydra overrides before options

The shape of iterative RPO (Pang et al. 2024): per seed, one multi-round run of each method, the
members of sweeps/iterative.yaml:

    rpo: python train.py experiment=iterative_rpo  (loss=rpo online.rounds=3 online.reference=previous)
    dpo: python train.py experiment=iterative_dpo  (loss=dpo online.rounds=3 online.reference=previous)
    rft: python train.py experiment=online_rft     (loss=rft online.rounds=3; round 1 is one-round RFT)

Runs use the preset's β and lr unless overridden; `bench/pipeline_table.py` runs the same three at
each method's tuned values, for the iterative table of docs/builtin_experiment.md. Each run's
summary.json lists its earlier rounds' figures under `rounds` and the last round's under
`metrics`; every round is measured on the same held-out prompts and pairs, against the SFT model.
Prints mean ± standard deviation over seeds per method and round: the true reward (one sample at
T=1, and greedy), KL(π‖π_SFT) and the log-prob drift from the SFT model of the held-out pairs'
chosen and rejected answers. Runs of one seed share its SFT checkpoint and samples (the stage cache
under --output-root).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
METHODS = {"rpo": "iterative_rpo", "dpo": "iterative_dpo", "rft": "online_rft"}  # conf/experiment/
COLUMNS = {
    "true reward (sampled)": "eval/true_reward",
    "greedy": "eval/true_reward_greedy",
    "KL vs SFT": "eval/kl",
    "Δlogp chosen": "eval/logratio/chosen",
    "Δlogp rejected": "eval/logratio/rejected",
}


def run_method(experiment: str, seed: int, root: Path, overrides: list[str]) -> dict:
    """`python train.py experiment=... seed=...` into a new folder under `root`; its summary."""
    run_dir = root / experiment / f"seed{seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    command = [
        sys.executable,
        "train.py",
        f"experiment={experiment}",
        f"seed={seed}",
        f"sft.seed={seed}",  # the spread over seeds includes the SFT model's own
        f"output_root={root}",
        f"cache_dir={root / 'cache'}",
        f"hydra.run.dir={run_dir}",
        *overrides,
    ]
    result = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
    return json.loads((run_dir / "summary.json").read_text())


def round_figures(summary: dict) -> list[dict[str, float]]:
    """Each round's figures, round 1 first: the earlier rounds' from `rounds`, the last's from `metrics`."""
    return [*summary.get("rounds", []), summary["metrics"]]


def cell(values: list[float]) -> str:
    if not values:
        return "n/a"
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {spread:.3f}"


def table(sft: list[dict], rounds: dict[str, list[list[dict]]]) -> str:
    """One row for the SFT model, then one per method and round; `rounds[method][seed][round]`."""
    lines = ["| method | round | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 2) + "|"]
    drift = {"eval/logratio/chosen", "eval/logratio/rejected"}  # the SFT model's own drift is 0 by definition
    cells = [cell([s[key] for s in sft]) if key not in drift else "0" for key in COLUMNS.values()]
    lines.append("| sft | 0 | " + " | ".join(cells) + " |")
    for method, per_seed in rounds.items():
        for number in range(min(len(figures) for figures in per_seed)):
            values = [
                [figures[number][key] for figures in per_seed if key in figures[number]]
                for key in COLUMNS.values()
            ]
            lines.append(f"| {method} | {number + 1} | " + " | ".join(cell(v) for v in values) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    parser.add_argument("--steps", type=int, help="trainer.max_steps of every round (default: the preset's)")
    parser.add_argument("--output-root", default="outputs/bench_iterative")
    parser.add_argument(
        "overrides", nargs="*", help="Hydra overrides for every run, e.g. task.splits.sample=200"
    )
    args = parser.parse_args()

    root = Path(args.output_root).resolve()
    steps = [] if args.steps is None else [f"trainer.max_steps={args.steps}"]
    overrides = [*args.overrides, *steps]  # --steps last: it wins over an override of the same key
    sft: list[dict] = []
    rounds: dict[str, list[list[dict]]] = {method: [] for method in args.methods}
    for seed in args.seeds:
        for method in args.methods:
            summary = run_method(METHODS[method], seed, root, overrides)
            rounds[method].append(round_figures(summary))
            if method == args.methods[0]:
                sft.append(summary["reference"])
            print(f"[bench] seed {seed} {method}: {summary['run_dir']}", flush=True)
    print(f"\nseeds: {args.seeds}; overrides: {' '.join(overrides) or 'none'}\n")
    print(table(sft, rounds))


if __name__ == "__main__":
    main()
