"""Generation scored by a reward on a fixed dataset (`evaluate.reward`): whole tiny runs, in process."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from dpo_exp.cli import run
from dpo_exp.config import validate_config
from dpo_exp.errors import ConfigError, UserError
from dpo_exp.report.compare import compare
from dpo_exp.training.metrics_file import METRICS, read_metrics
from tests.helpers import FAST_TRAINER, compose_config

WORDS = ["film", "plot", "cast", "music", "ending", "script", "pace", "set"]
GOOD, BAD = ["great", "moving", "fine", "fun"], ["dull", "weak", "bad", "slow"]


def pairs_file(path: Path) -> Path:
    """48 short review pairs over 24 prompts (each twice), as a researcher's own pairs file."""
    rows = [
        {
            "prompt": f"The {WORDS[i % 8]} was",
            "chosen": f" {GOOD[(i + j) % 4]} and {GOOD[i % 4]}.",
            "rejected": f" {BAD[(i + j) % 4]}.",
        }
        for i in range(24)
        for j in range(2)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def scored_run(tmp: Path, model_dir: Path, classifier_dir: Path, *extra: str) -> list[str]:
    return [
        "data=pairs",
        f"data.train_path={pairs_file(tmp / 'pairs.jsonl')}",
        "data.val_size=16",
        "data.batch_size=8",
        "data.eval_batch_size=16",
        "model=hf",
        f"model.path={model_dir}",
        *FAST_TRAINER,
        "optim.lr=1e-2",
        f"evaluate.reward={classifier_dir}",
        "evaluate.reward_output=prob:POSITIVE",
        "evaluate.prompts=6",
        "evaluate.max_new_tokens=8",
        "evaluate.batch_size=4",
        f"output_root={tmp / 'outputs'}",
        *extra,
    ]


def scored(tmp: Path, model_dir: Path, classifier_dir: Path, loss: str) -> tuple[Path, dict]:
    overrides = scored_run(tmp, model_dir, classifier_dir, f"loss={loss}")
    run_dir = tmp / "runs" / loss
    return run_dir, run(compose_config(overrides, fast=False), run_dir, overrides=overrides)


@pytest.fixture(scope="module")
def runs_folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("reward_eval")


@pytest.fixture(scope="module")
def dpo_run(runs_folder, tiny_model_dir, tiny_classifier_dir) -> tuple[Path, dict]:
    return scored(runs_folder, tiny_model_dir, tiny_classifier_dir, "dpo")


@pytest.fixture(scope="module")
def ipo_run(runs_folder, tiny_model_dir, tiny_classifier_dir) -> tuple[Path, dict]:
    return scored(runs_folder, tiny_model_dir, tiny_classifier_dir, "ipo")


def test_step_zero_and_end_figures_in_the_summary_and_metrics(dpo_run):
    run_dir, summary = dpo_run
    generation = summary["generation"]
    # At step 0 the policy is the reference: the same draws, identical samples, every prompt a tie.
    assert generation["step0"]["kl"] == 0.0
    assert generation["step0"]["win_rate"] == 0.5
    assert generation["step0"]["win_rate_ci95_low"] == generation["step0"]["win_rate_ci95_high"] == 0.5
    assert generation["final"]["step"] == 4 and generation["final"]["kl"] != 0.0
    assert generation["prompts"] == 6 and generation["reference"] == "the run's reference model"
    assert len(generation["reward_digest"]) == 16
    for name in ("reward", "win_rate", "kl", "length"):
        assert summary["metrics"][f"eval/{name}"] == pytest.approx(generation["final"][name])
    rows = read_metrics(run_dir / METRICS)
    evaluated = rows.dropna(subset=["eval/reward"])
    assert list(evaluated["step"]) == list(rows.dropna(subset=["val/loss"])["step"])  # every validation
    assert len(evaluated) == 3  # step 0, step 2, the end
    assert evaluated["eval/kl"].iloc[0] == 0.0
    assert {"eval/win_rate_ci95_low", "eval/win_rate_ci95_high", "eval/length"} <= set(rows.columns)
    table = [
        json.loads(line) for line in (run_dir / "samples" / "step_000000.jsonl").read_text().splitlines()
    ]
    assert len(table) == 6 and table[0]["policy_sample"] == table[0]["reference_sample"]


@pytest.mark.slow
def test_a_reference_free_loss_is_evaluated_against_a_copy_of_the_initial_policy(
    tmp_path, tiny_model_dir, tiny_classifier_dir
):
    overrides = scored_run(tmp_path, tiny_model_dir, tiny_classifier_dir, "loss=simpo", "beta=2.0")
    summary = run(compose_config(overrides, fast=False), tmp_path / "run", overrides=overrides)
    generation = summary["generation"]
    assert generation["reference"] == "a frozen copy of the initial policy"
    assert generation["step0"]["kl"] == 0.0 and generation["step0"]["win_rate"] == 0.5
    assert generation["final"]["kl"] != 0.0


@pytest.mark.slow
def test_compare_draws_the_reward_kl_frontier_and_adds_the_columns(dpo_run, ipo_run, tmp_path):
    root = dpo_run[0].parent
    table = compare(root, tmp_path / "compare")
    assert {"eval/reward", "eval/win_rate", "eval/kl"} <= set(table.columns)
    assert table["eval/win_rate"].notna().all()
    assert list((tmp_path / "compare").glob("group*_reward_kl.png"))
    figures = list((tmp_path / "compare").glob("*.png"))
    assert (tmp_path / "compare" / "report.html").read_text().count("<img") == len(figures)  # all in the page
    assert isinstance(pd.read_csv(tmp_path / "compare" / "runs.csv"), pd.DataFrame)


def test_a_reward_that_is_not_a_classifier_stops_the_run_before_training(tmp_path, tiny_model_dir):
    overrides = scored_run(tmp_path, tiny_model_dir, tiny_model_dir)
    with pytest.raises(UserError, match="not a sequence classifier"):
        run(compose_config(overrides, fast=False), tmp_path / "run", overrides=overrides)
    assert not (tmp_path / "run" / "metrics.csv").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["evaluate.split=tune"], "evaluate.split: data=pairs is a fixed dataset; its evaluation prompts"),
        (["evaluate.prompts=0"], "evaluate.prompts must be a positive integer, got 0"),
        (["evaluate.temperature=0"], "evaluate.temperature must be a finite number > 0"),
        (["strategy=fsdp"], "evaluate.reward: strategy=fsdp shards the policy"),
    ],
)
def test_fixed_data_evaluate_keys_that_cannot_work_are_refused(tmp_path, tiny_model_dir, extra, message):
    overrides = scored_run(tmp_path, tiny_model_dir, tiny_model_dir, *extra)
    with pytest.raises(ConfigError, match=message):
        validate_config(compose_config(overrides, fast=False), overrides=overrides)


def test_evaluate_keys_without_a_reward_on_a_fixed_dataset_are_refused(tmp_path):
    overrides = ["data=synthetic", "evaluate.prompts=8"]
    with pytest.raises(
        ConfigError, match="evaluate.prompts: data=synthetic is a fixed dataset.*evaluate.reward"
    ):
        validate_config(compose_config(overrides), overrides=overrides)


@pytest.mark.parametrize("key", ["prompts=8", "temperature=0.7", "max_new_tokens=9"])
def test_the_built_in_experiment_refuses_the_fixed_data_sampling_keys(key):
    overrides = [f"evaluate.{key}"]
    with pytest.raises(
        ConfigError, match=f"evaluate.{key.split('=')[0]}: data=arithmetic evaluates on its task"
    ):
        validate_config(compose_config(overrides, fast=False), overrides=overrides)
