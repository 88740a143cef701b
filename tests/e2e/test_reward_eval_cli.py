"""`evaluate.reward=<classifier>` through the real command line, then `dpo-exp compare` on the run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import FAST, dpo_exp_command, train_py

pytestmark = pytest.mark.slow

SCORED = ["evaluate.reward_output=prob:POSITIVE", "evaluate.prompts=6", "evaluate.max_new_tokens=8"]


def test_a_scored_run_logs_its_figures_prints_them_and_compare_draws_them(tmp_path, tiny_classifier_dir):
    result = train_py(*FAST, f"output_root={tmp_path}", f"evaluate.reward={tiny_classifier_dir}", *SCORED)
    assert result.returncode == 0, result.stderr[-3000:]
    (summary_path,) = (tmp_path / "runs").glob("*/*/summary.json")
    generation = json.loads(summary_path.read_text())["generation"]
    assert generation["step0"]["kl"] == 0.0 and generation["step0"]["win_rate"] == 0.5
    assert generation["final"]["step"] == 4
    assert "win rate against the reference's samples [95% interval]" in result.stdout
    assert list((summary_path.parent / "samples").glob("step_*.jsonl"))
    assert list((tmp_path / "cache" / "reward_scores" / generation["reward_digest"]).glob("*.json"))
    compared = dpo_exp_command("compare", str(tmp_path / "runs"))
    assert compared.returncode == 0, compared.stderr[-3000:]
    assert list((tmp_path / "runs" / "compare").glob("group*_reward_kl.png"))
    assert "win rate" in compared.stdout


def test_a_reward_that_is_not_a_classifier_is_one_line_before_training(tmp_path, tiny_model_dir):
    result = train_py(*FAST, f"output_root={tmp_path}", f"evaluate.reward={tiny_model_dir}", *SCORED)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if "not a sequence classifier" in line]
    assert len(lines) == 1 and lines[0].startswith(f"reward {tiny_model_dir}: not a sequence classifier")
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.glob("runs/*/*/metrics.csv"))


def test_a_fixed_dataset_refuses_evaluate_split_naming_it(tmp_path: Path, tiny_classifier_dir):
    result = train_py(
        *FAST, f"output_root={tmp_path}", f"evaluate.reward={tiny_classifier_dir}", "evaluate.split=tune"
    )
    assert result.returncode != 0
    assert "evaluate.split: data=synthetic is a fixed dataset" in result.stderr
