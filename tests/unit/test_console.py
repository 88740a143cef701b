"""The console: verbosity levels, bars that follow them, the result blocks, no folder for no run."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf

from dpo_exp.console import ProgressLines, library_level, progress, project_level
from dpo_exp.experiment.run import experiment_result
from dpo_exp.training.progress import StepProgressBar
from dpo_exp.training.result import run_result
from dpo_exp.training.run_files import discard_unused_folder


@pytest.fixture
def project_logging_at():
    logger = logging.getLogger("dpo_exp")
    before = logger.level

    def set_level(level: int) -> None:
        logger.setLevel(level)

    yield set_level
    logger.setLevel(before)


def test_verbosity_sets_the_project_and_library_levels():
    assert [project_level(v) for v in ("quiet", "normal", "verbose")] == ["WARNING", "INFO", "DEBUG"]
    assert [library_level(v) for v in ("quiet", "normal", "verbose")] == ["WARNING", "WARNING", "INFO"]
    with pytest.raises(ValueError, match="verbosity must be one of quiet, normal, verbose, got 'loud'"):
        project_level("loud")


def test_bars_are_drawn_only_when_stage_lines_are_shown(project_logging_at):
    project_logging_at(logging.WARNING)  # verbosity=quiet
    assert progress(total=3, desc="x").disable
    project_logging_at(logging.INFO)  # verbosity=normal
    bar = progress(total=3, desc="x")
    assert not bar.disable
    bar.close()


def test_the_training_bar_counts_optimizer_steps_not_batches(project_logging_at):
    project_logging_at(logging.INFO)
    trainer = SimpleNamespace(estimated_stepping_batches=8, global_step=2, progress_bar_metrics={})
    bar = StepProgressBar("train")
    bar.on_train_start(trainer, None)  # resumed at step 2 of 8
    assert (bar.bar.n, bar.bar.total) == (2, 8)
    trainer.global_step = 5  # accumulation: several batches per step
    trainer.progress_bar_metrics = {"train/loss": 0.25, "val/loss": 0.5}
    bar.on_train_batch_end(trainer, None, None, None, 0)
    assert bar.bar.n == 5 and bar.bar.postfix == "loss=0.25, val/loss=0.5"
    bar.on_train_end(trainer, None)
    assert bar.bar is None


def test_off_a_terminal_progress_is_a_plain_line_each_tenth_or_each_half_minute(capsys):
    now = [0.0]
    bar = ProgressLines(total=300, desc="     train", unit="steps", initial=0, clock=lambda: now[0])
    for step in range(1, 301):
        now[0] = step * 0.1  # 30 s in all: the tenths come first
        bar.set_postfix({"loss": f"{1 / step:.3g}"}, refresh=False)
        bar.update()
    bar.close()
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert "\r" not in err and len(lines) == 10, lines
    assert lines[4] == "train 150/300 steps (50%) in 15 s, loss=0.00667"
    slow = ProgressLines(range(1000), total=None, desc="ref", unit="batches", clock=lambda: now[0])
    for batch in slow:  # a tenth takes 100 s here: a line every 30 s instead
        now[0] += 1.0 if batch else 0.0
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("ref 31/1000 batches (3%) in 30 s")
    assert lines[-1].startswith("ref 1000/1000 batches (100%)") and 33 <= len(lines) <= 45


def test_progress_off_a_terminal_is_lines_and_says_nothing_when_quiet(project_logging_at, capsys):
    project_logging_at(logging.WARNING)  # verbosity=quiet
    with progress(total=4, desc="export", unit="parts") as bar:
        bar.update(4)
    project_logging_at(logging.INFO)
    assert isinstance(bar, ProgressLines) and capsys.readouterr().err == ""  # pytest's stderr: no terminal
    with progress(total=4, desc="export", unit="parts") as bar:
        bar.update(4)
    assert capsys.readouterr().err.startswith("export 4/4 parts (100%) in 0 s\n")


CFG = OmegaConf.create({"model": {"name": "tiny"}, "data": {"name": "arithmetic", "source": "task"}})


def test_the_experiment_result_sets_the_policy_beside_the_sft_model():
    summary = {
        "loss": "dpo", "beta": 2.0, "seed": 0, "global_step": 400, "wall_time_s": 30.0,
        "tokens_per_s": 12000.0, "run_dir": "/runs/x",
        "metrics": {"eval/true_reward": 0.696, "eval/true_reward_greedy": 0.796, "eval/kl": 0.801},
        "reference": {"eval/true_reward": 0.484, "eval/true_reward_greedy": 0.604, "eval/kl": 0.0},
        "evaluation": {"split": "eval", "prompts": 500},
    }  # fmt: skip
    lines = experiment_result(CFG, summary, 43.0).splitlines()
    assert lines[0].startswith("── result ")
    assert lines[1] == (
        "dpo · beta 2 · seed 0 · tiny on arithmetic · 400 steps in 30 s (12,000 tokens/s), whole job 43 s"
    )
    assert lines[2].split() == ["measured", "on", "500", "eval", "prompts", "policy", "SFT", "change"]
    assert lines[3].endswith("0.696     0.484    +0.212")  # 0.696 - 0.484
    assert lines[5].startswith("KL(policy || SFT), nats per answer") and lines[5].endswith("+0.801")
    assert lines[-1] == "run folder: /runs/x"


def test_the_experiment_result_prints_the_gain_with_its_paired_interval():
    summary = {
        "loss": "dpo", "beta": 2.0, "seed": 0, "global_step": 400, "wall_time_s": 30.0, "run_dir": "/runs/x",
        "metrics": {"eval/true_reward": 0.7, "eval/true_reward_greedy": 0.8, "eval/kl": 0.8,
                    "eval/gain/mean": 0.212, "eval/gain/ci95_low": 0.171, "eval/gain/ci95_high": 0.253},
        "reference": {"eval/true_reward": 0.488, "eval/true_reward_greedy": 0.6, "eval/kl": 0.0},
    }  # fmt: skip
    (line,) = [line for line in experiment_result(CFG, summary, 43.0).splitlines() if "interval" in line]
    assert line.startswith("gain over SFT, paired over prompts (95% interval)")
    assert line.split()[-3:] == ["+0.212", "[+0.171,", "+0.253]"]


def test_a_run_result_labels_its_figures_and_leaves_out_beta_where_the_loss_has_none():
    summary = {
        "loss": "rft", "beta": 0.1, "seed": 1, "global_step": 4, "wall_time_s": 2.0, "run_dir": "/runs/y",
        "metrics": {"val/loss": 1.25, "train/loss": 2.0},
        "wandb_run_dir": "/runs/y/wandb/offline-run-1",
    }  # fmt: skip
    cfg = OmegaConf.create({"model": {"name": "tiny"}, "data": {"name": "synthetic", "source": "synthetic"}})
    lines = run_result(cfg, summary, 2.2).splitlines()
    assert lines[1] == "rft · seed 1 · tiny on synthetic · 4 steps in 2 s"
    assert lines[2].split() == ["validation", "loss", "(rft)", "1.25"]
    assert lines[-2:] == [
        "W&B run: /runs/y/wandb/offline-run-1 (to upload: wandb sync /runs/y/wandb/offline-run-1)",
        "run folder: /runs/y",
    ]


def test_a_folder_holding_only_hydras_record_is_removed_with_its_empty_parents(tmp_path: Path):
    root = tmp_path / "outputs"
    refused = root / "runs" / "dpo_x" / "20260101-000000"
    (refused / ".hydra").mkdir(parents=True)
    (refused / ".hydra" / "config.yaml").write_text("beta: -1\n")
    (refused / "run.log").write_text("")
    kept = root / "runs" / "dpo_y" / "20260101-000000"
    (kept / ".hydra").mkdir(parents=True)
    (kept / "config.yaml").write_text("beta: 1\n")  # a run that started

    assert discard_unused_folder(refused, root)
    assert not (root / "runs" / "dpo_x").exists() and (root / "runs").is_dir()
    assert not discard_unused_folder(kept, root) and kept.is_dir()
    assert discard_unused_folder(kept.parent.parent / "dpo_z", root) is False  # never made
