"""The built-in experiment's table: every method over seeds, and a DPO β sweep, in Markdown.

    python bench/pipeline_table.py                       # the README table (held-out eval prompts)
    python bench/pipeline_table.py --split tune --methods dpo rpo --betas 0.5 1 2 4   # preset search

Every run is a whole built-in experiment run (`dpo_exp.cli.run`); runs of one seed share
that seed's SFT checkpoint and samples through the stage cache. Prints mean ± standard deviation
over seeds of the true reward (sampled, greedy), KL(π‖π_SFT), the chosen / rejected log-prob drift
from the SFT model on held-out pairs, and the sampled-reward gain over SFT per seed.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from hydra import compose, initialize_config_dir

from dpo_exp.cli import CONF_DIR, run

# Each method's overrides on top of the preset (conf/data/arithmetic.yaml). β means a different
# thing per loss (README): IPO's τ, KTO's β and ORPO's λ are set to common values, not tuned here.
METHODS = {
    "rft": ["loss=rft"],
    "dpo": ["loss=dpo"],
    "ipo": ["loss=ipo", "beta=0.5"],
    "kto": ["loss=kto", "beta=0.5"],
    "orpo": ["loss=orpo", "beta=0.1"],
    "rpo": ["loss=rpo"],
}
COLUMNS = {
    "true_reward": "eval/true_reward",
    "greedy": "eval/true_reward_greedy",
    "KL": "eval/kl",
    "Δlogp chosen": "eval/logratio/chosen",
    "Δlogp rejected": "eval/logratio/rejected",
}


def run_one(overrides: list[str], run_dir: Path) -> dict:
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    summary = run(cfg, run_dir, overrides=overrides)
    row = {column: summary["metrics"].get(key, float("nan")) for column, key in COLUMNS.items()}
    row["gain"] = row["true_reward"] - summary["reference"]["eval/true_reward"]
    reference = {column: summary["reference"].get(key, 0.0) for column, key in COLUMNS.items()}
    reference["gain"] = 0.0
    return {"row": row, "sft": reference}


def cell(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):+.3f} ± {spread:.3f}" if values else "n/a"


def table(rows: dict[str, list[dict]]) -> str:
    names = [*COLUMNS, "gain"]
    lines = ["| run | " + " | ".join(names) + " | gain per seed |", "|---" * (len(names) + 2) + "|"]
    for label, results in rows.items():
        cells = [cell([r[name] for r in results]) for name in names]
        per_seed = ", ".join(f"{r['gain']:+.2f}" for r in results)
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {per_seed} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="*", default=list(METHODS))
    parser.add_argument("--betas", type=float, nargs="*", default=[0.1, 0.5, 1.0, 2.0, 4.0])
    parser.add_argument("--split", choices=("eval", "tune"), default="eval")
    parser.add_argument("--output-root", default="outputs/bench")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run, e.g. optim.lr=1e-4")
    args = parser.parse_args()

    root = Path(args.output_root)
    common = [
        f"output_root={root}",
        f"cache_dir={root / 'cache'}",
        f"evaluate.split={args.split}",
        *args.overrides,
    ]
    runs = [(name, METHODS[name]) for name in args.methods]
    runs += [(f"dpo β={beta:g}", ["loss=dpo", f"beta={beta}"]) for beta in args.betas]
    rows: dict[str, list[dict]] = {"sft": []}
    for seed in args.seeds:
        for label, overrides in runs:
            tag = label.replace(" ", "_").replace("=", "")
            result = run_one([*common, *overrides, f"seed={seed}"], root / args.split / tag / f"seed{seed}")
            rows.setdefault(label, []).append(result["row"])
            if label == runs[0][0]:
                rows["sft"].append(result["sft"])
            print(f"[bench] seed {seed} {label}: {json.dumps(result['row'])}", flush=True)
    print(f"\nsplit: {args.split}; seeds: {args.seeds}; overrides: {' '.join(args.overrides) or 'none'}\n")
    print(table(rows))


if __name__ == "__main__":
    main()
