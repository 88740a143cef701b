"""The built-in experiment end to end at a reduced size: every stage's artefacts, then the cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dpo_exp.cli import run
from dpo_exp.experiment import run as experiment_run
from dpo_exp.experiment.stages import Task, sft_stage
from tests.helpers import SMALL_EXPERIMENT as SMALL
from tests.helpers import compose_config

pytestmark = pytest.mark.slow


def pipeline(tmp_path: Path, name: str, *overrides: str) -> dict:
    cfg = compose_config([*SMALL, f"cache_dir={tmp_path / 'cache'}", *overrides], fast=False)
    return run(cfg, tmp_path / name)


def test_pipeline_writes_every_stage_and_a_second_run_reuses_them(tmp_path: Path):
    first = pipeline(tmp_path, "dpo")
    sft, sample = (Path(first["stages"][stage]["path"]) for stage in ("sft", "sample"))
    assert not first["stages"]["sft"]["reused"] and not first["stages"]["sample"]["reused"]
    assert (sft / "model" / "model.safetensors").exists() and (sft / "model" / "tokenizer.json").exists()
    for name in (
        "pairs",
        "unpaired",
        "rft",
        "samples",
        "pairs_val",
        "unpaired_val",
        "rft_val",
        "samples_val",
    ):
        assert (sample / f"{name}.jsonl").stat().st_size > 0, name
    stats = json.loads((sample / "stats.json").read_text())
    assert stats["train"]["prompts"] == 32 and stats["train"]["samples"] == 128
    assert 0 < stats["train"]["prompts_with_pair"] <= 32

    summary = json.loads((tmp_path / "dpo" / "summary.json").read_text())
    for key in ("eval/true_reward", "eval/true_reward_greedy", "eval/kl", "eval/logratio/chosen"):
        assert key in summary["metrics"], key
    assert set(summary["reference"]) == {"eval/true_reward", "eval/true_reward_greedy", "eval/kl"}
    assert summary["reference"]["eval/kl"] == pytest.approx(0.0, abs=1e-5)
    # The paired gain's mean is the difference of the two means (same prompts); its interval holds it.
    metrics = summary["metrics"]
    change = metrics["eval/true_reward"] - summary["reference"]["eval/true_reward"]
    assert metrics["eval/gain/mean"] == pytest.approx(change, abs=1e-6)
    assert metrics["eval/gain/ci95_low"] <= metrics["eval/gain/mean"] <= metrics["eval/gain/ci95_high"]
    config = (tmp_path / "dpo" / "config.yaml").read_text()
    assert str(sft / "model") in config  # the preference run started from the SFT checkpoint
    tables = sorted((tmp_path / "dpo" / "samples").glob("step_*.jsonl"))
    assert tables, "no sample table was written"
    rows = [json.loads(line) for line in tables[-1].read_text().splitlines()]
    assert len(rows) == 8 and set(rows[0]) == {
        "prompt",
        "policy_sample",
        "policy_reward",
        "reference_sample",
        "reference_reward",
    }

    # A β sweep member and an RFT baseline with the same SFT and sampling settings share stages 1-2.
    second = pipeline(tmp_path, "dpo_beta", "beta=0.5")
    rft = pipeline(tmp_path, "rft", "loss=rft")
    for summary in (second, rft):
        assert summary["stages"]["sft"]["path"] == str(sft) and summary["stages"]["sft"]["reused"]
        assert summary["stages"]["sample"] == {"path": str(sample), "reused": True}
        assert summary["reference"] == first["reference"]
    assert rft["loss"] == "rft" and "eval/true_reward" in rft["metrics"]
    assert len([p for p in (tmp_path / "cache" / "sft").iterdir() if p.is_dir()]) == 1

    # A different sampling setting reuses the SFT checkpoint but samples again.
    third = pipeline(tmp_path, "k2", "sample.num_samples=2")
    assert third["stages"]["sft"]["reused"] and not third["stages"]["sample"]["reused"]


def test_online_rounds_resample_from_the_previous_rounds_policy(tmp_path: Path):
    summary = pipeline(tmp_path, "online", "online.rounds=2", "export.save=false")
    assert summary["run_name"] == "dpo_online2_tiny_arithmetic_beta2.0_seed0"  # not named by its start
    run_dir = tmp_path / "online"
    first_round = run_dir / "rounds" / "1"
    # Round 1 trained on the cached SFT samples and exported its policy (export.save=false or not).
    assert json.loads((first_round / "summary.json").read_text())["round"] == 1
    assert (first_round / "model" / "model.safetensors").exists()
    # Round 2 sampled the same prompts from that policy, and trained from it against the SFT model.
    round_samples = Path(summary["stages"]["sample"]["path"])
    assert round_samples.parent == run_dir / "round_samples"
    stats = json.loads((round_samples / "stats.json").read_text())
    assert stats["train"]["prompts"] == 32 and stats["train"]["samples"] == 128
    assert summary["round"] == 2 and summary["sample_stats"] == stats
    config = (run_dir / "config.yaml").read_text()
    assert f"path: {first_round / 'model'}" in config
    assert f"ref_path: {Path(summary['stages']['sft']['path']) / 'model'}" in config
    assert (tmp_path / "cache" / "sample") not in round_samples.parents
    assert f"train_path: {round_samples / 'pairs.jsonl'}" in config
    assert [entry["round"] for entry in summary["rounds"]] == [1]
    assert "eval/true_reward" in summary["rounds"][0] and "eval/true_reward" in summary["metrics"]
    assert not (run_dir / "model").exists()  # the last round keeps export.save=false
    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert on_disk["rounds"] == summary["rounds"]


def test_every_online_round_measures_drift_on_the_first_sample_stages_pairs(tmp_path: Path, monkeypatch):
    given = []  # the pair file each round's evaluation callback was made with
    tokenise = experiment_run.drift_pairs

    def recording(cfg, pair_file, tokenizer):
        given.append(pair_file)
        return tokenise(cfg, pair_file, tokenizer)

    monkeypatch.setattr(experiment_run, "drift_pairs", recording)
    summary = pipeline(tmp_path, "online", "online.rounds=2", "optim.warmup_steps=1")
    first_round = json.loads((tmp_path / "online" / "rounds" / "1" / "summary.json").read_text())
    first_samples = Path(first_round["stages"]["sample"]["path"])
    assert first_samples.parent == tmp_path / "cache" / "sample"  # the SFT model's samples
    assert Path(summary["stages"]["sample"]["path"]) != first_samples  # round 2 trained on its own
    assert given == [first_samples / "pairs_val.jsonl"] * 2
    for round_summary in (first_round, summary):
        assert round_summary["evaluation"]["drift_pairs"] == str(first_samples / "pairs_val.jsonl")
        assert "eval/logratio/chosen" in round_summary["metrics"]
        assert round_summary["lr_schedule"] == {  # each round a new run: warmup and schedule again
            "restarted": "each round",
            "scheduler": "cosine",
            "warmup_steps": 1,
            "max_steps": 4,
        }
    assert summary["rounds"][0]["eval/logratio/chosen"] == first_round["metrics"]["eval/logratio/chosen"]


def test_a_resumed_online_run_keeps_its_finished_rounds_and_continues_the_last(tmp_path: Path):
    settings = ["online.rounds=2", "checkpoint.every_n_steps=2"]
    first = pipeline(tmp_path, "online", *settings)
    run_dir = tmp_path / "online"
    round_one = (run_dir / "rounds" / "1" / "summary.json").read_text()
    (run_dir / "summary.json").unlink()  # killed after the last round's last checkpoint
    resumed = pipeline(tmp_path, "online", *settings, "resume=auto")
    assert (run_dir / "rounds" / "1" / "summary.json").read_text() == round_one  # not trained again
    assert resumed["resumed_from"] == str(run_dir / "checkpoints" / "step000004.ckpt")
    assert resumed["rounds"] == first["rounds"] and resumed["global_step"] == 4


def test_sft_stops_at_its_competence_target_and_records_the_step(tmp_path: Path):
    cfg = compose_config(
        [*SMALL, f"cache_dir={tmp_path / 'cache'}", "sft.target_reward=0.0", "sft.check_every=10"], fast=False
    )
    task = Task.from_config(cfg.task)
    result = sft_stage(cfg, task)
    stats = json.loads((result.path / "sft_stats.json").read_text())
    assert stats["reached_at_step"] == 10 and stats["steps"] == 10  # any reward reaches 0: the first check
    assert stats["checks"][0][0] == 10 and stats["target_reward"] == 0.0


def test_sft_that_misses_its_target_fails_and_publishes_nothing(tmp_path: Path):
    cfg = compose_config(
        [*SMALL, f"cache_dir={tmp_path / 'cache'}", "sft.target_reward=1.5", "sft.check_every=10"], fast=False
    )
    with pytest.raises(
        ValueError, match=r"short of sft.target_reward=1.5: raise sft.steps or lower the target"
    ):
        sft_stage(cfg, Task.from_config(cfg.task))
    assert not [
        p for p in (tmp_path / "cache" / "sft").iterdir() if p.is_dir() and not p.name.startswith(".")
    ]
