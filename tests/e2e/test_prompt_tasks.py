"""A task made of a prompt set, scored by a sentiment classifier, end to end on tiny stand-ins:
SFT -> sample -> label -> DPO -> evaluate with an online round; and the IMDb experiment's preset
(experiment=imdb_sentiment) with its hub ids pointed at local folders, at two β, with its frontier."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dpo_exp.cli import run
from dpo_exp.experiment.frontier import format_frontier, frontier_rows, read_summaries
from tests.conftest import PROJECT_ROOT
from tests.helpers import FAST_TRAINER, compose_config

pytestmark = pytest.mark.slow

IMDB = PROJECT_ROOT / "tests" / "fixtures" / "imdb"
REVIEWS = [
    ("This film was", " wonderful and moving."),
    ("I watched this and it", " bored me to tears."),
    ("The plot", " is a mess with no story."),
    ("What a", " delight from start to finish."),
]
SIZES = ["task.splits.eval=8", "task.splits.tune=4", "task.splits.sft=24", "task.splits.sample=8",
         "task.splits.sample_val=6", "task.splits.sft_check=4", "sft.batch_size=8", "sft.lr=1e-2",
         "sft.target_reward=null", "data.batch_size=4", "data.eval_batch_size=8", "evaluate.batch_size=8",
         "sample.batch_size=16", "task.max_new_tokens=8"]  # fmt: skip


def prompt_file(tmp_path: Path) -> Path:
    rows = [{"prompt": p, "review": c} for _ in range(14) for p, c in REVIEWS]
    path = tmp_path / "reviews.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_a_prompt_set_scored_by_a_classifier_runs_every_stage_and_an_online_round(
    tmp_path, family_dirs, tiny_classifier_dir
):
    overrides = [
        *FAST_TRAINER,
        *SIZES,
        "model=hf",
        f"model.path={family_dirs['gpt2']}",
        "optim.lr=1e-3",
        "data.max_length=64",
        "data.max_prompt_length=32",
        "task.name=reviews",
        "task.problems=dpo_exp.tasks.prompts:problems",
        "~task.options",  # the arithmetic options go: a prompt set takes its own
        f"+task.options={{path: {prompt_file(tmp_path)}, prompt_field: prompt, demonstration_field: review}}",
        f"task.reward={tiny_classifier_dir}",
        "task.reward_output=prob:POSITIVE",
        "task.pass_threshold=0.5",
        "sft.steps=10",
        "sample.num_samples=4",
        "online.rounds=2",
        f"evaluate.reward={tiny_classifier_dir}",
        "evaluate.reward_output=prob:NEGATIVE",  # a held-out reward: here the opposite sentiment
        f"cache_dir={tmp_path / 'cache'}",
    ]
    summary = run(compose_config(overrides, fast=False), tmp_path / "run")
    assert summary["rewards"] == {"labels": str(tiny_classifier_dir), "evaluation": str(tiny_classifier_dir)}
    sample = Path(summary["stages"]["sample"]["path"])
    assert sample.parent == tmp_path / "run" / "round_samples"  # round 2 sampled from round 1's policy
    rows = [json.loads(line) for line in (sample / "samples.jsonl").read_text().splitlines()]
    assert {row["prompt"] for row in rows} <= {p for p, _ in REVIEWS}
    scores = [score for row in rows for score in row["rewards"]]
    assert len(set(scores)) > 1 and all(0.0 < score < 1.0 for score in scores)  # P(positive)
    pairs = [json.loads(line) for line in (sample / "pairs.jsonl").read_text().splitlines()]
    assert pairs and all(pair["score_chosen"] > pair["score_rejected"] for pair in pairs)
    assert [entry["round"] for entry in summary["rounds"]] == [1]
    for figures in (summary["metrics"], summary["rounds"][0]):
        assert 0.0 <= figures["eval/true_reward"] <= 1.0 and figures["eval/kl"] == figures["eval/kl"]
    # The held-out reward scored the evaluation, and is in the SFT model's evaluation's key.
    (settings,) = (tmp_path / "cache" / "reference_eval").glob("*/settings.json")
    assert json.loads(settings.read_text())["reward"]["name"] == str(tiny_classifier_dir)
    assert summary["evaluation"]["reward"] == str(tiny_classifier_dir)


def imdb_overrides(tmp_path: Path, family_dirs, classifier: Path, beta: float) -> list[str]:
    """experiment=imdb_sentiment with its hub ids pointed at the stand-ins, at a tiny size."""
    return [
        "experiment=imdb_sentiment",
        *FAST_TRAINER,
        *SIZES,
        "task.splits.sft=18",  # the fixture's 48 reviews, all used
        f"task.options.dataset={IMDB}",
        "task.options.revision=null",
        f"task.options.tokenizer={family_dirs['gpt2']}",
        "task.options.tokenizer_revision=null",
        f"task.reward={classifier}",
        "task.reward_revision=null",
        f"model.path={family_dirs['gpt2']}",
        "model.revision=null",
        "optim.lr=1e-3",
        "data.max_length=96",
        "sft.steps=10",
        f"beta={beta}",
        f"cache_dir={tmp_path / 'cache'}",
    ]


def test_the_imdb_experiment_on_stand_ins_at_two_betas_prints_its_frontier(
    tmp_path, family_dirs, tiny_classifier_dir, capsys
):
    summaries = []
    for beta in (0.1, 1.0):
        cfg = compose_config(imdb_overrides(tmp_path, family_dirs, tiny_classifier_dir, beta), fast=False)
        assert cfg.sample.num_samples == 4 and cfg.sample.pair_mode == "all"
        assert cfg.task.reward_output == "prob:POSITIVE"
        summaries.append(run(cfg, tmp_path / "sweep" / f"beta{beta}"))
    first, second = summaries
    assert second["stages"]["sft"]["reused"] and second["stages"]["sample"]["reused"]
    sample = Path(first["stages"]["sample"]["path"])
    rows = [json.loads(line) for line in (sample / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and all(len(row["completions"]) == 4 for row in rows)
    for row in rows:  # a prefix of 2-8 tokens (characters, for the stand-in's tokenizer)
        assert 2 <= len(row["prompt"]) <= 8 and len(row["answer"]) > 0
    pairs = [json.loads(line) for line in (sample / "pairs.jsonl").read_text().splitlines()]
    # Every ordered pair of distinct scores: 4 samples of distinct scores give 6.
    expected = [
        sum(a != b for i, a in enumerate(row["rewards"]) for b in row["rewards"][i + 1 :]) for row in rows
    ]
    assert len(pairs) == sum(expected) and 6 in expected

    table = format_frontier(read_summaries([tmp_path / "sweep"]))
    print(table)
    rows = frontier_rows(read_summaries([tmp_path / "sweep"]))
    assert rows[0]["run"] == "SFT model" and rows[0]["kl"] == pytest.approx(0.0, abs=1e-5)
    assert sorted(row["beta"] for row in rows[1:]) == [0.1, 1.0]
    assert f"true reward by {tiny_classifier_dir}" in capsys.readouterr().out
