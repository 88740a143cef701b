"""What a tuning sweep chose: its members grouped by their values, gains averaged over seeds.

    python train.py --config-dir sweeps --config-name tune_dpo output_root=outputs/tune/dpo
    python bench/tune_table.py outputs/tune/dpo/sweeps/*/        # one table per sweep folder

Reads every member's summary.json in the given sweep folders. A member's gain is its sampled
true reward minus its own SFT model's (both on the sweep's split, `tune`). Members that differ only
in `seed` are one setting; settings are listed by mean gain over seeds (to 3 decimals; a tie goes
to the better worst seed), with the worst seed's gain and the mean KL. The first row is the one the
sweep chose (docs/which_loss.md, "Every method, tuned the same way"); rows marked "≈ best" are within
0.02 of it (the sampling error of one 500-prompt figure): this sweep does not tell them apart.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

SAMPLING_ERROR = 0.02  # one sampled true reward on 500 prompts


def member_values(folder: Path) -> dict[str, str]:
    """`3_loss=dpo,beta=2,optim.lr=0.0004,seed=1` -> {"loss": "dpo", "beta": "2", ...}."""
    name = folder.name.split("_", 1)[1]
    return dict(part.split("=", 1) for part in name.split(",") if "=" in part)


def settings(sweep_dirs: list[Path]) -> dict[str, list[dict[str, float]]]:
    """{"beta=2,optim.lr=0.0004": [{"seed", "gain", "kl"} per member], ...} for members that finished."""
    grouped: dict[str, list[dict[str, float]]] = {}
    for sweep_dir in sweep_dirs:
        for summary_path in sorted(sweep_dir.glob("*/summary.json")):
            summary = json.loads(summary_path.read_text())
            values = member_values(summary_path.parent)
            seed = values.pop("seed", "?")
            key = ",".join(f"{k}={v}" for k, v in values.items() if k != "loss") or "(preset)"
            metrics, reference = summary["metrics"], summary["reference"]
            gain = metrics["eval/true_reward"] - reference["eval/true_reward"]
            grouped.setdefault(key, []).append({"seed": seed, "gain": gain, "kl": metrics["eval/kl"]})
    return grouped


def table(grouped: dict[str, list[dict[str, float]]]) -> str:
    def rank(item: tuple[str, list[dict[str, float]]]) -> tuple[float, float]:
        gains = [m["gain"] for m in item[1]]  # by mean gain to 3 decimals, a tie by the worst seed
        return -round(statistics.mean(gains), 3), -min(gains)

    ranked = sorted(grouped.items(), key=rank)
    lines = ["| setting | mean gain | worst seed | gain per seed | KL (mean) |", "|---|---|---|---|---|"]
    best = statistics.mean(m["gain"] for m in ranked[0][1]) if ranked else 0.0
    for key, members in ranked:
        gains = [m["gain"] for m in members]
        mean = statistics.mean(gains)
        mark = " (≈ best)" if key != ranked[0][0] and best - mean < SAMPLING_ERROR else ""
        per_seed = ", ".join(f"{m['seed']}: {m['gain']:+.3f}" for m in members)
        kl = statistics.mean(m["kl"] for m in members)
        lines.append(f"| {key}{mark} | {mean:+.3f} | {min(gains):+.3f} | {per_seed} | {kl:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("sweep_dirs", nargs="+", type=Path, help="sweep folders (outputs/.../sweeps/<time>/)")
    args = parser.parse_args()
    print(table(settings(args.sweep_dirs)))


if __name__ == "__main__":
    main()
