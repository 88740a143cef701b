"""The built-in experiment's tables (docs/), in Markdown: every method over seeds, then iterative
preference training method × round.

    python bench/pipeline_table.py                                  # the tables of docs/ (eval prompts)
    python bench/pipeline_table.py --methods dpo rft --no-iterative # some rows only
    python bench/pipeline_table.py --split tune                     # on the prompts values are tuned on
    python bench/pipeline_table.py --reuse                          # read back runs that finished

Seed S means `seed=S sft.seed=S`: it draws the SFT model (initialisation and batch order), its
samples and the preference training, so the spread over seeds includes SFT's own variance. Each
method runs with the values its sweep chose on the `tune` prompts (METHODS, from
sweeps/tune_<method>.yaml; docs/which_loss.md, "Every method, tuned the same way"). Runs of one seed share its
SFT checkpoint and samples through the stage cache. The method table's `online rft` row is round 3
of the iterative table's online RFT run. Prints mean ± standard deviation over seeds of the true
reward (sampled, greedy), KL(π‖π_SFT), the chosen / rejected log-prob drift from the SFT model on
held-out pairs, and the sampled-reward gain over SFT per seed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir

from dpo_exp.cli import CONF_DIR, run

sys.path.insert(0, str(Path(__file__).resolve().parent))
from iterative_table import METHODS as ITERATIVE  # noqa: E402
from iterative_table import round_figures  # noqa: E402
from iterative_table import table as iterative_table  # noqa: E402

# Each method's values, chosen on `tune` over SFT seeds 0 and 1 by sweeps/tune_<method>.yaml (the
# largest mean gain in sampled true reward). β is τ for IPO and λ for ORPO (docs/losses.md); RFT has none.
METHODS = {
    "rft": ["loss=rft", "optim.lr=8e-4"],
    "dpo": ["loss=dpo", "beta=2", "optim.lr=4e-4"],
    "ipo": ["loss=ipo", "beta=0.5", "optim.lr=2e-4"],
    "kto": ["loss=kto", "beta=4", "optim.lr=4e-4"],
    "orpo": ["loss=orpo", "beta=0.1", "optim.lr=4e-4"],
    "simpo": ["loss=simpo", "beta=4", "optim.lr=4e-4"],
    "rpo": ["loss=rpo", "beta=1", "optim.lr=4e-4"],
    "hinge": ["loss=hinge", "beta=1", "optim.lr=4e-4"],
}
COLUMNS = {
    "true_reward": "eval/true_reward",
    "greedy": "eval/true_reward_greedy",
    "KL": "eval/kl",
    "Δlogp chosen": "eval/logratio/chosen",
    "Δlogp rejected": "eval/logratio/rejected",
}


def run_one(overrides: list[str], run_dir: Path, *, reuse: bool = False) -> dict:
    """One built-in experiment run, in this process; its summary. With `reuse`, a run that finished
    in `run_dir` with the same overrides is read back instead of trained again."""
    record = run_dir / "bench_overrides.json"
    if reuse and (run_dir / "summary.json").exists() and record.exists():
        if json.loads(record.read_text()) == overrides:
            print(f"[bench] reused {run_dir}", flush=True)
            return json.loads((run_dir / "summary.json").read_text())
    if run_dir.exists():
        shutil.rmtree(run_dir)  # an earlier run of other overrides, or one that did not finish
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    summary = run(cfg, run_dir, overrides=overrides)
    record.write_text(json.dumps(overrides))
    return summary


def row(metrics: dict, reference: dict) -> dict:
    figures = {column: metrics.get(key, float("nan")) for column, key in COLUMNS.items()}
    figures["gain"] = figures["true_reward"] - reference["eval/true_reward"]
    return figures


def sft_row(reference: dict) -> dict:
    figures = {column: reference.get(key, 0.0) for column, key in COLUMNS.items()}  # drift: 0 by definition
    return {**figures, "gain": 0.0}


def cell(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):+.3f} ± {spread:.3f}" if values else "n/a"


def table(rows: dict[str, list[dict]]) -> str:
    names = [*COLUMNS, "gain"]
    lines = ["| run | " + " | ".join(names) + " | gain per seed |", "|---" * (len(names) + 2) + "|"]
    for label, results in rows.items():
        cells = [cell([r[name] for r in results]) for name in names]
        per_seed = ", ".join(f"{r['gain']:+.3f}" for r in results)
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {per_seed} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="*", choices=list(METHODS), default=list(METHODS))
    parser.add_argument("--no-iterative", action="store_true", help="skip the iterative runs and table")
    parser.add_argument("--split", choices=("eval", "tune"), default="eval")
    parser.add_argument("--output-root", default="outputs/bench")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="read back runs that finished under --output-root with the same overrides",
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run")
    args = parser.parse_args()
    if not args.methods and args.no_iterative:
        parser.error("nothing to run: name --methods or drop --no-iterative")

    root = Path(args.output_root).resolve()
    common = [f"output_root={root}", f"cache_dir={root / 'cache'}", f"evaluate.split={args.split}"]
    rows: dict[str, list[dict]] = {"sft": []}
    iterative: dict[str, list[list[dict]]] = {}
    references: list[dict] = []
    for seed in args.seeds:
        seeds = [f"seed={seed}", f"sft.seed={seed}"]
        for label in args.methods:
            overrides = [*common, *METHODS[label], *seeds, *args.overrides]
            summary = run_one(overrides, root / args.split / label / f"seed{seed}", reuse=args.reuse)
            rows.setdefault(label, []).append(row(summary["metrics"], summary["reference"]))
            print(f"[bench] seed {seed} {label}: {json.dumps(rows[label][-1])}", flush=True)
        for method, experiment in ({} if args.no_iterative else ITERATIVE).items():
            overrides = [*common, f"experiment={experiment}", *METHODS[method][1:], *seeds, *args.overrides]
            summary = run_one(overrides, root / args.split / experiment / f"seed{seed}", reuse=args.reuse)
            iterative.setdefault(method, []).append(round_figures(summary))
            print(f"[bench] seed {seed} {experiment}: {summary['run_dir']}", flush=True)
            if method == "rft":
                rows.setdefault(f"online rft ({len(iterative['rft'][-1])} rounds)", []).append(
                    row(summary["metrics"], summary["reference"])
                )
        references.append(summary["reference"])
        rows["sft"].append(sft_row(summary["reference"]))
    print(f"\nsplit: {args.split}; seeds: {args.seeds}; overrides: {' '.join(args.overrides) or 'none'}\n")
    print(table(rows))
    if iterative:
        print()
        print(iterative_table(references, iterative))


if __name__ == "__main__":
    main()
