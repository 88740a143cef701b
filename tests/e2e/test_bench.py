"""bench/iterative_table.py at a tiny size: every method's rounds, read back into one table."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT
from tests.helpers import SMALL_EXPERIMENT

pytestmark = pytest.mark.slow


def test_the_iterative_table_has_a_row_per_method_and_round(tmp_path: Path):
    command = [
        sys.executable,
        "bench/iterative_table.py",
        "--seeds",
        "0",
        "--steps",
        "2",
        "--output-root",
        str(tmp_path),
        *SMALL_EXPERIMENT,
        "online.rounds=2",
    ]
    result = subprocess.run(command, cwd=PROJECT_ROOT, env=dict(os.environ), capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    table = result.stdout[result.stdout.index("| method | round |") :].splitlines()
    assert table[0] == (
        "| method | round | true reward (sampled) | greedy | KL vs SFT | Δlogp chosen | Δlogp rejected |"
    )
    assert [row.split(" | ")[:2] for row in table[2:]] == [
        ["| sft", "0"],
        *[[f"| {method}", str(number)] for method in ("rpo", "dpo", "rft") for number in (1, 2)],
    ]
    assert all(" ± 0.000" in row and "nan" not in row for row in table[2:])  # one seed: no spread
    # Each method ran as one run of its experiment config, at --steps a round, on one SFT model.
    runs = sorted(path.parent.parent.name for path in tmp_path.glob("*/seed0-*/summary.json"))
    assert runs == ["iterative_dpo", "iterative_rpo", "online_rft"]
    for config in tmp_path.glob("*/seed0-*/rounds/1/config.yaml"):
        assert "max_steps: 2" in config.read_text()
    assert len([path for path in (tmp_path / "cache" / "sft").iterdir() if path.is_dir()]) == 1


def test_the_pipeline_table_varies_the_sft_seed_and_reuses_finished_runs(tmp_path: Path):
    command = [
        sys.executable,
        "bench/pipeline_table.py",
        "--seeds",
        "0",
        "1",
        "--methods",
        "dpo",
        "rft",
        "--no-iterative",
        "--reuse",
        "--output-root",
        str(tmp_path),
        *SMALL_EXPERIMENT,
    ]
    environment = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}  # the test's reward module, in-process
    first = subprocess.run(command, cwd=PROJECT_ROOT, env=environment, capture_output=True, text=True)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-3000:]
    table = first.stdout[first.stdout.index("| run |") :].splitlines()
    assert [row.split(" | ")[0] for row in table[2:]] == ["| sft", "| dpo", "| rft"]
    # Seed S is seed=S and sft.seed=S: two seeds, two SFT models, each shared by both methods.
    assert len([path for path in (tmp_path / "cache" / "sft").iterdir() if path.is_dir()]) == 2
    summaries = {path.parent.name: path for path in tmp_path.glob("eval/dpo/seed*/summary.json")}
    assert sorted(summaries) == ["seed0", "seed1"]
    second = subprocess.run(command, cwd=PROJECT_ROOT, env=environment, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.count("[bench] reused") == 4  # 2 methods x 2 seeds, none trained again
    assert second.stdout[second.stdout.index("| run |") :] == first.stdout[first.stdout.index("| run |") :]


def test_which_loss_tunes_then_evaluates_every_named_loss_and_draws_the_frontier(tmp_path: Path):
    """Three losses of three kinds (a reference loss, the data's rewards, no beta) at a tiny size:
    each tuned over its 3-point grid on one seed, then evaluated on two; a table row and a point
    of the figure each."""
    seeds = ["--tune-seeds", "0", "--eval-seeds", "0", "1"]
    command = [sys.executable, "bench/which_loss.py", "--losses", "dpo", "reward_gap_sq", "sft", *seeds,
               "--output-root", str(tmp_path), *SMALL_EXPERIMENT]  # fmt: skip
    environment = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    done = subprocess.run(command, cwd=PROJECT_ROOT, env=environment, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    table = done.stdout[done.stdout.index("| rank |") :].splitlines()
    assert sorted(line.split(" | ")[1] for line in table[2:5]) == ["dpo", "reward_gap_sq", "sft"]
    assert (tmp_path / "frontier.png").stat().st_size > 0
    assert len(list(tmp_path.glob("tune/*/*/seed0/summary.json"))) == 9  # 3 losses x 3 points
    assert len(list(tmp_path.glob("eval/*/seed*/summary.json"))) == 6  # 3 losses x 2 seeds
    assert len([path for path in (tmp_path / "cache" / "sft").iterdir() if path.is_dir()]) == 2


def test_the_generation_eval_cost_prints_both_evaluations_per_100_prompts():
    command = [sys.executable, "bench/generation_eval_cost.py", "--prompts", "4", "--max-new-tokens", "4"]
    result = subprocess.run(command, cwd=PROJECT_ROOT, env=dict(os.environ), capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if "s per 100 prompts" in line]
    assert len(lines) == 2 and "policy and reference" in lines[0] and "policy only" in lines[1]
    assert all("mean length" in line for line in lines)  # random weights may end an answer early
