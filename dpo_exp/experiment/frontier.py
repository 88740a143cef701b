"""The reward-KL frontier of a sweep of the built-in experiment, as a table: for each run, its β
(and loss), the true reward of its policy and its KL from the SFT model, with the SFT model's own
figures first (the frontier's origin). The DPO paper's Figure 2 (left) plots these points.

`python -m dpo_exp.experiment.frontier <folder>...` prints it for the run folders under each folder.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from dpo_exp.experiment.run import ROUNDS_DIR
from dpo_exp.training.run_files import SUMMARY


def frontier_rows(summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row a run, in order of KL: loss, β, true reward (sampled, greedy) and KL; the SFT model's
    figures first, from the first run (every run of one sweep shares them)."""
    rows = [
        {
            "run": summary.get("run_name", "?"),
            "loss": summary.get("loss", "?"),
            "beta": summary.get("beta"),
            "true_reward": summary["metrics"].get("eval/true_reward", float("nan")),
            "true_reward_greedy": summary["metrics"].get("eval/true_reward_greedy", float("nan")),
            "kl": summary["metrics"].get("eval/kl", float("nan")),
        }
        for summary in summaries
    ]
    rows.sort(key=lambda row: row["kl"])
    if summaries and "reference" in summaries[0]:
        reference = summaries[0]["reference"]
        origin = {"run": "SFT model", "loss": "-", "beta": None}
        origin.update({key: reference[f"eval/{key}"] for key in ("true_reward", "true_reward_greedy", "kl")})
        rows.insert(0, origin)
    return rows


def format_frontier(summaries: list[dict[str, Any]]) -> str:
    """The frontier as a fixed-width table, naming the reward that scored it."""
    reward = next((s.get("evaluation", {}).get("reward") for s in summaries if s.get("evaluation")), None)
    title = "reward-KL frontier" + (f" (true reward by {reward})" if reward else "")
    header = f"{'run':<40} {'loss':<8} {'beta':>8} {'true reward':>12} {'greedy':>8} {'KL (nats)':>10}"
    lines = [title, header]
    for row in frontier_rows(summaries):
        beta = "" if row["beta"] is None else f"{row['beta']:g}"
        lines.append(
            f"{row['run'][:40]:<40} {row['loss']:<8} {beta:>8} {row['true_reward']:>12.3f} "
            f"{row['true_reward_greedy']:>8.3f} {row['kl']:>10.3f}"
        )
    return "\n".join(lines)


def read_summaries(folders: list[Path]) -> list[dict[str, Any]]:
    """The summaries of the finished runs in `folders` and the folders under them."""
    found = sorted({path for folder in folders for path in folder.rglob(SUMMARY)})
    found = [
        path for path in found if path.parent.parent.name != ROUNDS_DIR
    ]  # an online run's earlier rounds
    summaries = [json.loads(path.read_text()) for path in found]
    return [summary for summary in summaries if "eval/kl" in summary.get("metrics", {})]


if __name__ == "__main__":
    print(format_frontier(read_summaries([Path(arg) for arg in sys.argv[1:]])))
