"""Every documented command that can run here, run for real, and checked for what its page says it does.

Each `python train.py` / `dpo-exp` line of the bash blocks of the README and of the pages under docs/
runs as a subprocess, as typed,
with the reader's own files replaced by real stand-ins (tests/e2e/readme.py) and overrides that
make it small appended after its own arguments. A multirun's value lists are cut to their first
two values, a named sweep's `hydra.sweeper.params` to two members: a sweep still has members,
named by what varies. What the README says a command does is read back from the folders it
writes: the run folder(s), their config.yaml and summary.json, a sweep's members and their names.
The commands that cannot run here are in COMPOSED_ONLY, with the reason; test_readme.py composes
and validates every command.
"""

# ruff: noqa: E501  (README command lines are kept whole, as the README prints them)
from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml

from dpo_exp.experiment.frontier import frontier_rows, read_summaries
from dpo_exp.tasks import gsm8k
from dpo_exp.training.metrics_file import read_metrics
from tests.conftest import PROJECT_ROOT
from tests.e2e import rewards
from tests.e2e.readme import (
    IMDB,
    RUN_FOLDER,
    SFT_EXPORT,
    arguments,
    gsm8k_stand_in,
    launch,
    readme_commands,
)
from tests.e2e.test_prompt_tasks import SIZES as IMDB_SIZES
from tests.helpers import FAST_MODEL, FAST_TRAINER, ctrl_c_after_first_checkpoint, dpo_exp_command, train_py

pytestmark = pytest.mark.slow

# The documented commands that cannot run on a CPU without a network, and why; every other command
# runs below.
COMPOSED_ONLY = {
    "python train.py model=qwen2 data=hh_helpful": "Qwen/Qwen2.5-0.5B's weights come from the hub, offline here",
    "python train.py model=pythia model.revision=step143000 model.activation_checkpointing=true data=hh_helpful": "Pythia's weights at revision step143000 come from the hub, offline here",
    "python train.py data=ultrafeedback model=qwen2": "Qwen/Qwen2.5-0.5B's weights and chat template come from the hub, offline here",
    "python train.py --config-dir sweeps --config-name beta_grid hydra/launcher=slurm hydra.launcher.partition=gpu": "submits its members to a SLURM cluster (sbatch), which is not here",
    "python train.py data=pairs data.train_path=prefs.jsonl model=qwen2 evaluate.reward=siebert/sentiment-roberta-large-english evaluate.reward_output=prob:POSITIVE": "Qwen/Qwen2.5-0.5B's weights and siebert/sentiment-roberta-large-english's come from the hub, offline here (the same scoring with a local classifier: tests/e2e/test_reward_eval_cli.py)",
}

RAN: set[str] = set()  # the commands the tests below run, as the README prints them


def runs(*commands: str):
    """Marks a test as the one that runs these README commands for real."""
    RAN.update(commands)
    return lambda test: test


def test_every_readme_command_is_run_or_says_why_not():
    commands = set(readme_commands())
    assert RAN <= commands and set(COMPOSED_ONLY) <= commands
    assert not RAN & set(COMPOSED_ONLY)
    assert set(COMPOSED_ONLY) == commands - RAN


# -- reduced sizes and reading back what a command wrote -----------------------------------------

SMALL_EXPERIMENT = [
    *FAST_MODEL,
    *FAST_TRAINER,
    "task.splits.eval=16",
    "task.splits.tune=8",
    "task.splits.sft=64",
    "task.splits.sample=48",
    "task.splits.sample_val=16",
    "task.splits.sft_check=16",
    "sft.steps=40",
    "sft.target_reward=null",
    "sft.batch_size=16",
    "sft.lr=1e-2",
    "sample.num_samples=8",
    "evaluate.batch_size=16",
    "task.reward=tests.e2e.rewards:partial_credit",
    "task.pass_threshold=0.5",
]
# HH-RLHF on a tiny model: 2 steps of 4 pairs, a single validation batch, 40 rows read.
HH_STEPS = ["trainer.max_steps=2", "trainer.val_check_interval=2", "trainer.limit_val_batches=1",
            "+data.options.max_rows=40", "trainer.enable_progress_bar=false"]  # fmt: skip
HH_REDUCED = [*HH_STEPS, *FAST_MODEL]
# The saved tiny Llama has 256 positions; the HH presets cut at 512.
HH_ON_SAVED_MODEL = [*HH_STEPS, "data.max_length=128", "data.max_prompt_length=96"]
DEFAULT_RUN = "dpo_tiny_arithmetic_beta2.0_seed0"


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def only_run(output_root: Path) -> Path:
    (named,) = (output_root / "runs").iterdir()
    (run_dir,) = named.iterdir()
    return run_dir


def run_named(output_root: Path, name: str) -> Path:
    (run_dir,) = (output_root / "runs" / name).iterdir()
    return run_dir


def summary_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def config_of(run_dir: Path) -> dict:
    return yaml.safe_load((run_dir / "config.yaml").read_text())


def members(output_root: Path) -> dict[str, Path]:
    """The member folders of the one sweep under `output_root`, by name."""
    (sweep_dir,) = (output_root / "sweeps").iterdir()
    return {
        path.name: path for path in sorted(sweep_dir.iterdir()) if path.is_dir() and path.name[0].isdigit()
    }


def first_two(words: list[str]) -> list[str]:
    """A multirun's `key=a,b,c,...` lists cut to `key=a,b`."""
    return [re.sub(r"^([\w.]+)=([^,]+,[^,]+),.*$", r"\1=\2", word) for word in words]


def launch_sweep(command: str, reader_files: dict[str, str], *appended: str) -> subprocess.CompletedProcess:
    """A `-m` command of the README with its value lists cut to two values each."""
    return ok(train_py(*first_two(arguments(command, reader_files)), *appended))


def stage_folders(cache_dir: Path, stage: str) -> list[Path]:
    return [path for path in (cache_dir / stage).iterdir() if path.is_dir()]


# -- Running -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def experiment_root(tmp_path_factory, reader_files) -> Path:
    """`outputs/` after the default job: the built-in experiment's commands below share its
    `outputs/cache`, as the README's do."""
    root = tmp_path_factory.mktemp("outputs")
    ok(launch("python train.py", reader_files, *SMALL_EXPERIMENT, f"output_root={root}"))
    return root


@runs("python train.py")
def test_the_default_job_runs_the_built_in_experiment(experiment_root):
    run_dir = run_named(experiment_root, DEFAULT_RUN)
    summary, config = summary_of(run_dir), config_of(run_dir)
    assert config["data"]["name"] == "arithmetic" and config["task"]["name"] == "arithmetic"
    sample_dir = Path(summary["stages"]["sample"]["path"])
    assert config["data"]["train_path"] == str(sample_dir / "pairs.jsonl")  # trained on its samples
    assert config["model"]["path"] == str(Path(summary["stages"]["sft"]["path"]) / "model")
    pairs = sum(1 for _ in (sample_dir / "pairs.jsonl").open())
    assert summary["data"]["train"]["rows_read"] == pairs and summary["tokens"] > 0
    assert "eval/true_reward" in summary["metrics"] and "eval/true_reward" in summary["reference"]


@runs("python train.py data=synthetic loss=ipo beta=0.1")
def test_the_synthetic_headline_run(tmp_path, reader_files):
    command = "python train.py data=synthetic loss=ipo beta=0.1"
    ok(launch(command, reader_files, *FAST_MODEL, *FAST_TRAINER, f"output_root={tmp_path}"))
    summary = summary_of(only_run(tmp_path))
    assert summary["loss"] == "ipo" and summary["beta"] == 0.1 and summary["global_step"] == 4
    assert summary["data"]["train"]["rows_read"] == 4000 - 256


HH_TINY = "python train.py data=hh_helpful experiment=hh_helpful_tiny"
HH_LOCAL_COPY = "python train.py data=hh_helpful data.dataset=/data/hh-rlhf data.revision=null"


def check_hh_run(run_dir: Path, repo: Path) -> None:
    summary, config = summary_of(run_dir), config_of(run_dir)
    assert config["data"]["source"] == "hh_rlhf" and config["data"]["dataset"] == str(repo)
    assert config["data"]["data_dir"] == "helpful-base" and config["data"]["validation_split"] == "test"
    assert summary["data"]["train"]["source"] == f"{repo} (data_dir helpful-base, split train)"
    assert summary["data"]["train"]["row_format"] == "implicit prompt (HH-RLHF transcripts)"
    assert summary["data"]["train"]["rows_read"] == 40 and summary["global_step"] == 2
    assert summary["tokens"] > 2 * 4 * 20  # 2 steps of 4 pairs of real transcripts, not 5-token sums


@runs(HH_TINY)
def test_hh_helpful_trains_on_a_local_copy_of_the_hub_repository(tmp_path, reader_files, hh_fixture_repo):
    # The preset names Anthropic/hh-rlhf at a pinned revision; offline, a folder laid out as that
    # repository stands in (here the shipped transcripts), read through the same loading path.
    local = [f"data.dataset={hh_fixture_repo}", "data.revision=null"]
    ok(launch(HH_TINY, reader_files, *local, *HH_REDUCED, f"output_root={tmp_path}"))
    check_hh_run(only_run(tmp_path), hh_fixture_repo)
    assert config_of(only_run(tmp_path))["data"]["max_length"] == 256  # the experiment's setting


@pytest.mark.real_data
def test_hh_helpful_trains_on_the_real_rows(tmp_path, reader_files, hh_rlhf_repo):
    local = [f"data.dataset={hh_rlhf_repo}", "data.revision=null"]
    ok(launch(HH_TINY, reader_files, *local, *HH_REDUCED, f"output_root={tmp_path}"))
    check_hh_run(only_run(tmp_path), hh_rlhf_repo)


def test_hh_helpful_offline_with_no_cached_copy_says_so_in_one_line(tmp_path, reader_files):
    # The test session's datasets cache is empty and the hub is off: what a researcher offline sees.
    result = launch(HH_TINY, reader_files, *HH_REDUCED, f"output_root={tmp_path}")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if "Anthropic/hh-rlhf" in line]
    assert (
        "Anthropic/hh-rlhf@09be8c5 (data_dir helpful-base, split train): could not load the dataset" in line
    )
    assert "data.dataset=<a folder laid out as the hub repository> data.revision=null" in line
    assert not list(tmp_path.rglob("summary.json"))


@runs(
    "python train.py model=hf model.path=/path/to/sft data=pairs data.train_path=prefs.jsonl loss=ipo beta=0.1"
)
def test_a_named_model_trains_on_the_named_pairs_file(tmp_path, reader_files):
    command = "python train.py model=hf model.path=/path/to/sft data=pairs data.train_path=prefs.jsonl loss=ipo beta=0.1"
    ok(launch(command, reader_files, *FAST_TRAINER, "data.val_size=20", f"output_root={tmp_path}"))
    run_dir = only_run(tmp_path)
    summary, config = summary_of(run_dir), config_of(run_dir)
    assert config["model"]["path"] == reader_files["/path/to/sft"]
    assert config["data"]["train_path"] == reader_files["prefs.jsonl"] and config["loss"]["name"] == "ipo"
    assert summary["loss"] == "ipo" and summary["beta"] == 0.1
    assert summary["data"]["train"]["rows_read"] == 100 and summary["data"]["validation"]["rows_read"] == 20
    assert "stages" not in summary and "task" not in config  # no SFT, no sampling
    assert summary["tokens"] > 0


@runs("python train.py -m beta=0.01,0.1,0.5 loss=dpo,ipo")
def test_a_sweep_runs_a_member_per_combination_on_one_sft_model_and_one_set_of_pairs(tmp_path, reader_files):
    command = "python train.py -m beta=0.01,0.1,0.5 loss=dpo,ipo"
    launch_sweep(command, reader_files, *SMALL_EXPERIMENT, f"output_root={tmp_path}")
    found = members(tmp_path)
    assert list(found) == [
        "0_beta=0.01,loss=dpo",
        "1_beta=0.01,loss=ipo",
        "2_beta=0.1,loss=dpo",
        "3_beta=0.1,loss=ipo",
    ]
    for name, member in found.items():
        summary = summary_of(member)
        assert name == f"{name[0]}_beta={summary['beta']},loss={summary['loss']}"
        assert config_of(member)["data"]["name"] == "arithmetic"
    # Every member of a β or loss sweep reuses one SFT checkpoint and one set of pairs.
    assert (
        len(stage_folders(tmp_path / "cache", "sft")) == len(stage_folders(tmp_path / "cache", "sample")) == 1
    )


@runs("dpo-exp data-report data=hh_helpful")
def test_the_data_report_command_reports_the_named_data(tmp_path, reader_files, hh_fixture_repo):
    local = [f"data.dataset={hh_fixture_repo}", "data.revision=null"]
    command = "dpo-exp data-report data=hh_helpful"
    result = ok(launch(command, reader_files, *local, "+data.options.max_rows=10", f"output_root={tmp_path}"))
    assert "train data (hh_helpful): 10 rows read" in result.stdout
    assert (
        f"read from {hh_fixture_repo} (data_dir helpful-base, split train), format: implicit prompt"
        in result.stdout
    )
    assert not list(tmp_path.iterdir())  # no run folder


# -- Your model, your data (the README) ----------------------------------------------------------

OWN = "python train.py model=hf model.path=/path/to/sft data=pairs data.train_path=prefs.jsonl"
OWN_SWEEP = "python train.py -m model=hf model.path=/path/to/sft data=pairs data.train_path=prefs.jsonl loss=dpo,ipo,simpo beta=0.1,0.5 seed=0,1"
OWN_WANDB = f"{OWN} logger=wandb"
OWN_RESUME = f"{OWN} loss=ipo beta=0.1 resume=auto"


@runs(OWN_SWEEP)
def test_a_loss_beta_seed_sweep_on_your_pairs_is_compared_with_seeds_folded(tmp_path, reader_files):
    launch_sweep(OWN_SWEEP, reader_files, *FAST_TRAINER, "data.val_size=20", f"output_root={tmp_path}")
    found = members(tmp_path)  # each list cut to two values: 2 losses x 2 betas x 2 seeds
    assert list(found)[:2] == ["0_loss=dpo,beta=0.1,seed=0", "1_loss=dpo,beta=0.1,seed=1"] and len(found) == 8
    for name, member in found.items():
        summary = summary_of(member)
        assert name.endswith(f"loss={summary['loss']},beta={summary['beta']},seed={summary['seed']}")
        assert config_of(member)["model"]["path"] == reader_files["/path/to/sft"]
    (sweep_dir,) = (tmp_path / "sweeps").iterdir()
    ok(dpo_exp_command("compare", str(sweep_dir)))  # the README's `dpo-exp compare outputs/sweeps/<time>/`
    seeds = pd.read_csv(sweep_dir / "compare" / "seeds.csv")
    assert len(seeds) == 4 and set(seeds["runs"]) == {2}  # each setting's mean ± sd over its 2 seeds


@runs(OWN_WANDB)
def test_wandb_writes_an_offline_run_in_the_run_folder_that_the_result_block_names(tmp_path, reader_files):
    result = ok(launch(OWN_WANDB, reader_files, *FAST_TRAINER, "data.val_size=20", f"output_root={tmp_path}"))
    run_dir = only_run(tmp_path)
    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    assert list(offline.glob("run-*.wandb"))
    assert Path(summary_of(run_dir)["wandb_run_dir"]).resolve() == offline.resolve()
    assert f"(to upload: wandb sync {summary_of(run_dir)['wandb_run_dir']})" in result.stdout + result.stderr


@runs(OWN_RESUME)
def test_ctrl_c_then_the_same_command_with_resume_auto_continues_in_one_folder(tmp_path, reader_files):
    # The README's quick-start command (OWN with loss=ipo beta=0.1), stopped by Ctrl-C after a checkpoint.
    longer = ["data.val_size=20", "trainer.max_steps=60", "trainer.val_check_interval=20",
              "checkpoint.every_n_steps=5", "trainer.enable_progress_bar=false", f"output_root={tmp_path}"]  # fmt: skip
    first = arguments(OWN_RESUME.removesuffix(" resume=auto"), reader_files)
    stderr = ctrl_c_after_first_checkpoint([*first, *longer], tmp_path)
    assert "resume=auto" in stderr, stderr[-3000:]
    result = ok(launch(OWN_RESUME, reader_files, *longer))
    assert "resuming from" in result.stdout
    run_dir = only_run(tmp_path)  # one folder
    assert summary_of(run_dir)["global_step"] == 60 and summary_of(run_dir)["loss"] == "ipo"
    steps = read_metrics(run_dir / "metrics.csv").dropna(subset=["train/loss"])["step"].astype(int).tolist()
    assert steps == list(range(60))  # one curve: every step once


# -- The built-in experiment ---------------------------------------------------------------------


def run_in_experiment_root(root: Path, command: str, reader_files: dict[str, str], name: str) -> Path:
    """The command in the default job's `outputs/`; its run folder, checked to reuse the default
    job's SFT model and samples."""
    ok(launch(command, reader_files, *SMALL_EXPERIMENT, f"output_root={root}"))
    run_dir = run_named(root, name)
    default = summary_of(run_named(root, DEFAULT_RUN))
    stages = summary_of(run_dir)["stages"]
    assert stages["sft"]["path"] == default["stages"]["sft"]["path"] and stages["sft"]["reused"]
    return run_dir


@runs("python train.py loss=ipo beta=0.5")
def test_another_loss_trains_on_the_cached_sft_model_and_samples(experiment_root, reader_files):
    command = "python train.py loss=ipo beta=0.5"
    run_dir = run_in_experiment_root(
        experiment_root, command, reader_files, "ipo_tiny_arithmetic_beta0.5_seed0"
    )
    summary, default = summary_of(run_dir), summary_of(run_named(experiment_root, DEFAULT_RUN))
    assert summary["loss"] == "ipo" and summary["beta"] == 0.5
    assert summary["stages"]["sample"] == {**default["stages"]["sample"], "reused": True}


@runs("python train.py loss=rft")
def test_the_rft_baseline_trains_on_the_passing_samples(experiment_root, reader_files):
    run_dir = run_in_experiment_root(
        experiment_root, "python train.py loss=rft", reader_files, "rft_tiny_arithmetic_seed0"
    )
    summary, config = summary_of(run_dir), config_of(run_dir)
    assert summary["loss"] == "rft" and summary["stages"]["sample"]["reused"]
    assert config["data"]["train_path"] == str(Path(summary["stages"]["sample"]["path"]) / "rft.jsonl")
    assert "train/nll" in summary["metrics"] and "train/rewards/accuracy" not in summary["metrics"]


def check_two_rounds(run_dir: Path) -> dict:
    """Round 2 (the run itself) trained from round 1's exported policy on its own new samples."""
    summary, config = summary_of(run_dir), config_of(run_dir)
    (earlier,) = summary["rounds"]
    assert earlier["round"] == 1 and Path(earlier["run_dir"]) == run_dir / "rounds" / "1"
    assert summary_of(run_dir / "rounds" / "1")["global_step"] == summary["global_step"] == 4
    assert config["model"]["path"] == str(run_dir / "rounds" / "1" / "model")
    (round_samples,) = [path for path in (run_dir / "round_samples").iterdir() if path.is_dir()]
    assert summary["stages"]["sample"]["path"] == str(round_samples)
    return summary


@runs("python train.py online.rounds=2")
def test_online_round_two_resamples_from_round_ones_policy(experiment_root, reader_files):
    command = "python train.py online.rounds=2"
    run_dir = run_in_experiment_root(
        experiment_root, command, reader_files, "dpo_online2_tiny_arithmetic_beta2.0_seed0"
    )
    summary = check_two_rounds(run_dir)
    assert summary["loss"] == "dpo" and config_of(run_dir)["data"]["train_path"].endswith("pairs.jsonl")


@runs("python train.py loss=rft online.rounds=2")
def test_online_rft_fine_tunes_on_each_rounds_passing_samples(experiment_root, reader_files):
    command = "python train.py loss=rft online.rounds=2"
    run_dir = run_in_experiment_root(
        experiment_root, command, reader_files, "rft_online2_tiny_arithmetic_seed0"
    )
    summary = check_two_rounds(run_dir)
    assert summary["loss"] == "rft"
    assert config_of(run_dir)["data"]["train_path"] == str(
        Path(summary["stages"]["sample"]["path"]) / "rft.jsonl"
    )


@runs("python train.py -m beta=0.5,1,2,4 seed=0,1,2")
def test_a_beta_sweep_over_seeds_shares_the_stages_of_each_seed(tmp_path, reader_files):
    launch_sweep(
        "python train.py -m beta=0.5,1,2,4 seed=0,1,2",
        reader_files,
        *SMALL_EXPERIMENT,
        f"output_root={tmp_path}",
    )
    found = members(tmp_path)
    assert list(found) == ["0_beta=0.5,seed=0", "1_beta=0.5,seed=1", "2_beta=1,seed=0", "3_beta=1,seed=1"]
    stages = {name: summary_of(member)["stages"] for name, member in found.items()}
    assert len({stage["sft"]["path"] for stage in stages.values()}) == 1  # sft.seed, not seed
    by_seed = {name: stage["sample"]["path"] for name, stage in stages.items()}
    assert by_seed["0_beta=0.5,seed=0"] == by_seed["2_beta=1,seed=0"] != by_seed["1_beta=0.5,seed=1"]
    assert by_seed["1_beta=0.5,seed=1"] == by_seed["3_beta=1,seed=1"]


@runs("dpo-exp sft")
def test_dpo_exp_sft_builds_the_sft_stage_only(tmp_path, reader_files):
    result = ok(launch("dpo-exp sft", reader_files, *SMALL_EXPERIMENT, f"output_root={tmp_path}"))
    (sft,) = stage_folders(tmp_path / "cache", "sft")
    assert (sft / "model" / "config.json").exists() and "[sft]      built in" in result.stdout
    assert sorted(path.name for path in (tmp_path / "cache").iterdir()) == ["sft"]
    assert not (tmp_path / "runs").exists()


@runs("dpo-exp sample")
def test_dpo_exp_sample_builds_the_sft_and_sample_stages_only(tmp_path, reader_files):
    ok(launch("dpo-exp sample", reader_files, *SMALL_EXPERIMENT, f"output_root={tmp_path}"))
    (sample,) = stage_folders(tmp_path / "cache", "sample")
    for name in ("samples.jsonl", "pairs.jsonl", "unpaired.jsonl", "rft.jsonl", "pairs_val.jsonl"):
        assert (sample / name).stat().st_size > 0, name
    assert sorted(path.name for path in (tmp_path / "cache").iterdir()) == ["sample", "sft"]
    assert not (tmp_path / "runs").exists()


@runs("python train.py data=gsm8k task.reward=dpo_exp.tasks.gsm8k:reward")
def test_another_task_runs_the_experiment_with_the_reward_named_by_import_path(tmp_path, reader_files):
    # openai/gsm8k is offline here: a folder laid out as its repository stands in.
    repo = gsm8k_stand_in(tmp_path / "gsm8k")
    small = [*FAST_MODEL, *FAST_TRAINER, f"task.options.dataset={repo}", "task.options.revision=null",
             "task.splits.eval=8", "task.splits.tune=4", "task.splits.sft=64", "task.splits.sample=24",
             "task.splits.sample_val=8", "task.splits.sft_check=8", "task.max_new_tokens=8",
             "sft.steps=60", "sft.batch_size=16", "sample.num_samples=8",
             "data.max_length=64", "data.max_prompt_length=48", "data.batch_size=4", "evaluate.batch_size=8"]  # fmt: skip
    command = "python train.py data=gsm8k task.reward=dpo_exp.tasks.gsm8k:reward"
    ok(launch(command, reader_files, *small, f"output_root={tmp_path}"))
    run_dir = run_named(tmp_path, "dpo_tiny_gsm8k_beta0.1_seed0")
    summary, config = summary_of(run_dir), config_of(run_dir)
    assert config["task"]["name"] == "gsm8k" and config["task"]["reward"] == "dpo_exp.tasks.gsm8k:reward"
    samples = [
        json.loads(line) for line in (Path(summary["stages"]["sample"]["path"]) / "samples.jsonl").open()
    ]
    scored = [(row, completion, reward) for row in samples
              for completion, reward in zip(row["completions"], row["rewards"], strict=True)]  # fmt: skip
    assert scored and all(
        reward == gsm8k.reward(row["prompt"], completion, row["answer"]) for row, completion, reward in scored
    )
    assert {reward for *_, reward in scored} == {0.0, 1.0}  # right and wrong answers: pairs to train on
    assert summary["global_step"] == 4 and "eval/true_reward" in summary["metrics"]


# -- Sweeps and comparing runs -------------------------------------------------------------------

GRID = "python train.py -m beta=0.01,0.05,0.1,0.5 loss=dpo,ipo"
COMPARE_SWEEP = "dpo-exp compare outputs/sweeps/<time>/"
BETA_GRID = "python train.py --config-dir sweeps --config-name beta_grid"
RESCORE = "dpo-exp compare outputs/ --rescore-beta 0.05,0.1,0.5 --rescore-loss dpo,ipo"


def sweeper_params(**values: str) -> list[str]:
    """Overrides of a named sweep's `hydra.sweeper.params`, each value list one quoted string."""
    return [f"hydra.sweeper.params.{key}='{value}'" for key, value in values.items()]


@runs(GRID, COMPARE_SWEEP)
def test_a_grid_runs_one_member_after_another_and_compare_tables_and_plots_it(tmp_path, reader_files):
    launch_sweep(GRID, reader_files, *SMALL_EXPERIMENT, f"output_root={tmp_path}")
    found = members(tmp_path)
    assert list(found) == [
        "0_beta=0.01,loss=dpo",
        "1_beta=0.01,loss=ipo",
        "2_beta=0.05,loss=dpo",
        "3_beta=0.05,loss=ipo",
    ]
    (sweep_dir,) = (tmp_path / "sweeps").iterdir()
    ok(launch(COMPARE_SWEEP, {"outputs/sweeps/<time>/": str(sweep_dir)}))
    out = sweep_dir / "compare"
    for name in (
        "runs.csv",
        "runs.md",
        "report.html",
        "group1_metrics_vs_step.png",
        "group1_final_vs_beta.png",
        "group1_frontier.png",
    ):
        assert (out / name).stat().st_size > 0, name
    table = pd.read_csv(out / "runs.csv")
    assert sorted(zip(table["loss.name"], table["beta"], strict=True)) == [
        ("dpo", 0.01),
        ("dpo", 0.05),
        ("ipo", 0.01),
        ("ipo", 0.05),
    ]
    assert set(table["status"]) == {"finished"} and table["eval/true_reward"].notna().all()


@runs(BETA_GRID, RESCORE)
def test_the_named_beta_grid_saves_what_compare_rescores_at_other_betas_and_losses(tmp_path, reader_files):
    reduced = sweeper_params(loss="dpo,ipo", beta="0.1")
    ok(launch(BETA_GRID, reader_files, *reduced, *SMALL_EXPERIMENT, f"output_root={tmp_path}"))
    found = members(tmp_path)
    assert list(found) == ["0_loss=dpo,beta=0.1", "1_loss=ipo,beta=0.1"]
    assert all(list((member / "eval_logps").glob("step_*.safetensors")) for member in found.values())
    ok(launch(RESCORE, {"outputs/": str(tmp_path)}))
    table = pd.read_csv(tmp_path / "compare" / "rescored.csv")
    assert len(table) == 2 * 2 * 3 and table["not re-scorable"].isna().all()  # runs × losses × β
    for name, member in found.items():  # at its own loss and β, a run's re-scored val/loss is its own
        loss = summary_of(member)["loss"]
        mine = table[
            (table["run"].str.contains(name, regex=False))
            & (table["rescored loss"] == loss)
            & (table["rescored β"] == 0.1)
        ]
        assert mine["val/loss"].tolist() == pytest.approx(
            [summary_of(member)["metrics"]["val/loss"]], rel=1e-5
        )


@runs("python train.py --config-dir sweeps --config-name seeds hydra/launcher=parallel")
def test_the_seeds_sweep_runs_two_members_at_a_time_on_one_sft_model(tmp_path, reader_files):
    command = "python train.py --config-dir sweeps --config-name seeds hydra/launcher=parallel"
    ok(
        launch(
            command,
            reader_files,
            *sweeper_params(beta="0.5", seed="0,1"),
            *SMALL_EXPERIMENT,
            f"output_root={tmp_path}",
        )
    )
    found = members(tmp_path)
    assert list(found) == ["0_beta=0.5,seed=0", "1_beta=0.5,seed=1"]
    for member in found.values():
        launcher = yaml.safe_load((member / ".hydra" / "hydra.yaml").read_text())["hydra"]["launcher"]
        assert "joblib" in launcher["_target_"] and launcher["n_jobs"] == 2
    # Members that start together wait for one SFT builder: one built it, the other reused it.
    sft = [summary_of(member)["stages"]["sft"] for member in found.values()]
    assert sft[0]["path"] == sft[1]["path"] and sorted(stage["reused"] for stage in sft) == [False, True]


@runs("python train.py --config-dir sweeps --config-name optuna_beta_lr")
def test_the_optuna_search_keeps_its_trials_and_their_objective_in_a_study(tmp_path, reader_files):
    command = "python train.py --config-dir sweeps --config-name optuna_beta_lr"
    ok(
        launch(
            command, reader_files, "hydra.sweeper.n_trials=2", *SMALL_EXPERIMENT, f"output_root={tmp_path}"
        )
    )
    found = members(tmp_path)
    assert [name.split("_")[0] for name in found] == ["0", "1"]
    study = optuna.load_study(study_name="dpo_beta_lr", storage=f"sqlite:///{tmp_path}/optuna_dpo_beta_lr.db")
    objective = [summary_of(member)["metrics"]["val/rewards/accuracy"] for member in found.values()]
    assert [trial.value for trial in study.trials] == pytest.approx(objective)
    for trial, member in zip(study.trials, found.values(), strict=True):
        assert (
            member.name == f"{trial.number}_beta={trial.params['beta']},optim.lr={trial.params['optim.lr']}"
        )
        assert 0.01 <= summary_of(member)["beta"] <= 2.0


@runs("python train.py --config-dir sweeps --config-name iterative")
def test_the_iterative_sweep_runs_three_rounds_of_each_method(tmp_path, reader_files):
    command = "python train.py --config-dir sweeps --config-name iterative"
    ok(
        launch(
            command,
            reader_files,
            *sweeper_params(experiment="iterative_rpo,online_rft"),
            *SMALL_EXPERIMENT,
            f"output_root={tmp_path}",
        )
    )
    found = members(tmp_path)
    assert list(found) == ["0_experiment=iterative_rpo", "1_experiment=online_rft"]
    rpo, rft = (summary_of(member) for member in found.values())
    assert rpo["loss"] == "rpo" and rft["loss"] == "rft"
    for summary in (rpo, rft):  # rounds 1-2 under `rounds`, round 3 the run itself
        assert [entry["round"] for entry in summary["rounds"]] == [1, 2] and summary["round"] == 3
    # Each RPO round starts from the previous round's policy, and is its own reference (no ref_path:
    # a frozen copy of the starting policy).
    rpo_model = config_of(found["0_experiment=iterative_rpo"])["model"]
    assert (
        rpo_model["path"] == str(Path(rpo["rounds"][1]["run_dir"]) / "model")
        and rpo_model["ref_path"] is None
    )


@runs("python train.py --config-dir sweeps --config-name tune_dpo output_root=outputs/tune/dpo")
def test_a_tuning_sweep_measures_on_the_tune_prompts_each_seed_with_its_own_sft_model(reader_files):
    command = "python train.py --config-dir sweeps --config-name tune_dpo output_root=outputs/tune/dpo"
    ok(launch(command, reader_files, *sweeper_params(beta="2", seed="0"), *SMALL_EXPERIMENT))
    root = Path(reader_files["outputs/tune/dpo"])  # where bench/tune_table.py reads it: <root>/sweeps/*/
    found = members(root)
    assert list(found) == [
        "0_loss=dpo,beta=2,optim.lr=0.0002,seed=0",
        "1_loss=dpo,beta=2,optim.lr=0.0004,seed=0",
    ]
    for member in found.values():
        config, summary = config_of(member), summary_of(member)
        assert config["evaluate"]["split"] == "tune" and config["sft"]["seed"] == config["seed"] == 0
        assert summary["evaluation"]["split"] == "tune" and summary["evaluation"]["prompts"] == 8


# -- Runs that survive: distributed strategies, resume -------------------------------------------

# Lightning's own lines, shown with verbosity=verbose: one per process, and the backend.
RANK_LINES = (
    "Initializing distributed: GLOBAL_RANK: 0, MEMBER: 1/2",
    "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2",
)


@runs("python train.py data=synthetic strategy=ddp strategy.devices=2")
def test_ddp_trains_on_two_processes_with_gloo_on_a_cpu(tmp_path, reader_files):
    command = "python train.py data=synthetic strategy=ddp strategy.devices=2"
    result = ok(
        launch(
            command, reader_files, *FAST_MODEL, *FAST_TRAINER, "verbosity=verbose", f"output_root={tmp_path}"
        )
    )
    assert all(line in result.stderr for line in RANK_LINES) and "distributed_backend=gloo" in result.stderr
    summary = summary_of(only_run(tmp_path))
    assert summary["global_step"] == 4 and config_of(only_run(tmp_path))["data"]["name"] == "synthetic"


@runs("python train.py -m data=synthetic strategy=ddp beta=0.1,0.5")
def test_ddp_inside_a_sweep_runs_each_member_once_on_two_processes(tmp_path, reader_files):
    command = "python train.py -m data=synthetic strategy=ddp beta=0.1,0.5"
    result = launch_sweep(
        command, reader_files, *FAST_MODEL, *FAST_TRAINER, "verbosity=verbose", f"output_root={tmp_path}"
    )
    found = members(tmp_path)
    assert list(found) == ["0_beta=0.1", "1_beta=0.5"]  # no member ran the sweep again
    assert [summary_of(member)["beta"] for member in found.values()] == [0.1, 0.5]
    assert all(result.stderr.count(line) == 2 for line in RANK_LINES)


@runs("python train.py -m hydra/launcher=submitit_local data=synthetic beta=0.1,0.5")
def test_a_sweep_through_submitit_runs_each_member_as_a_job(tmp_path, reader_files):
    command = "python train.py -m hydra/launcher=submitit_local data=synthetic beta=0.1,0.5"
    launch_sweep(command, reader_files, *FAST_MODEL, *FAST_TRAINER, f"output_root={tmp_path}")
    found = members(tmp_path)
    assert list(found) == ["0_beta=0.1", "1_beta=0.5"]
    assert [summary_of(member)["beta"] for member in found.values()] == [0.1, 0.5]
    (sweep_dir,) = (tmp_path / "sweeps").iterdir()
    jobs = list((sweep_dir / ".submitit").glob("*/*_result.pkl"))
    assert len(jobs) == 2  # each member ran as its own submitit job, in its own process
    sweep_summary = json.loads((sweep_dir / "sweep_summary.json").read_text())
    assert (sweep_summary["finished"], sweep_summary["failed"]) == (2, 0)
    assert sorted(run["member"] for run in sweep_summary["runs"]) == ["0_beta=0.1", "1_beta=0.5"]


@runs("python train.py hydra.run.dir=outputs/my_run resume=auto")
def test_a_killed_run_continues_where_it_stopped(tmp_path, reader_files):
    command = "python train.py hydra.run.dir=outputs/my_run resume=auto"
    run_dir = Path(reader_files["outputs/my_run"])
    longer = [*SMALL_EXPERIMENT, "trainer.max_steps=60", "trainer.val_check_interval=60",
              "checkpoint.every_n_steps=5", f"output_root={tmp_path}"]  # fmt: skip
    words = [sys.executable, "train.py", *arguments(command, reader_files), *longer]
    environment = {**os.environ, "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(
        words, cwd=PROJECT_ROOT, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 240
    while not (run_dir / "checkpoints" / "step000005.ckpt").exists():
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (run_dir / "summary.json").exists()

    result = ok(launch(command, reader_files, *longer))
    assert "resuming from" in result.stdout
    summary = summary_of(run_dir)
    assert summary["resumed_from"].startswith(str(run_dir / "checkpoints" / "step0000"))
    assert summary["global_step"] == 60 and (run_dir / "metrics.part1.csv").exists()


# -- Real models: families, LoRA, precision, export ----------------------------------------------


@runs("python train.py model=llama model.path=/ckpt/my-sft data=hh_helpful")
def test_a_local_llama_checkpoint_trains_on_hh_helpful(tmp_path, reader_files, hh_fixture_repo):
    command = "python train.py model=llama model.path=/ckpt/my-sft data=hh_helpful"
    local = [f"data.dataset={hh_fixture_repo}", "data.revision=null"]
    ok(launch(command, reader_files, *local, *HH_ON_SAVED_MODEL, f"output_root={tmp_path}"))
    run_dir = only_run(tmp_path)
    config = config_of(run_dir)
    assert config["model"]["name"] == "llama" and config["model"]["path"] == reader_files["/ckpt/my-sft"]
    assert config["model"]["attn_implementation"] == "sdpa"
    check_hh_run(run_dir, hh_fixture_repo)
    assert (run_dir / "model" / "model.safetensors").exists()


LORA = "python train.py model=llama model.path=/ckpt/sft data=hh_helpful 'model.lora={r:16,alpha:32,dropout:0.05,target_modules:all-linear}' trainer.precision=bf16-mixed"
ADAPTER = "python train.py model=llama model.path=/ckpt/base model.adapter_path=/ckpt/sft-lora data=hh_helpful model.adapter_reference=adapter export.lora=adapter"


@runs(LORA)
def test_lora_in_bf16_mixed_precision_trains_the_adapter_and_exports_a_merged_model(
    tmp_path, reader_files, hh_fixture_repo
):
    local = [f"data.dataset={hh_fixture_repo}", "data.revision=null"]
    result = ok(launch(LORA, reader_files, *local, *HH_ON_SAVED_MODEL, f"output_root={tmp_path}"))
    run_dir = only_run(tmp_path)
    config = config_of(run_dir)
    assert config["trainer"]["precision"] == "bf16-mixed"  # on a CPU too
    assert config["model"]["lora"] == {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": "all-linear"}
    check_hh_run(run_dir, hh_fixture_repo)
    assert "reference: the policy's base, adapter off" in result.stdout
    assert (run_dir / "model" / "model.safetensors").exists() and not (
        run_dir / "model" / "adapter_config.json"
    ).exists()


@runs(ADAPTER)
def test_a_saved_adapter_continues_against_itself_and_exports_the_adapter(
    tmp_path, reader_files, hh_fixture_repo
):
    local = [f"data.dataset={hh_fixture_repo}", "data.revision=null"]
    ok(launch(ADAPTER, reader_files, *local, *HH_ON_SAVED_MODEL, f"output_root={tmp_path}"))
    run_dir = only_run(tmp_path)
    config = config_of(run_dir)
    assert config["model"]["adapter_path"] == reader_files["/ckpt/sft-lora"]
    assert config["model"]["adapter_reference"] == "adapter"
    check_hh_run(run_dir, hh_fixture_repo)
    # The saved adapter changes the model; the reference is that adapter again: no log-ratio at step 0.
    assert summary_of(run_dir)["step_zero"]["max_abs_logratio"] < 1e-3
    assert (run_dir / "model" / "adapter_config.json").exists()


# -- Data ----------------------------------------------------------------------------------------


@runs(HH_LOCAL_COPY)
def test_hh_helpful_reads_a_local_copy_of_the_hub_repository(tmp_path, reader_files, hh_fixture_repo):
    ok(
        launch(
            HH_LOCAL_COPY,
            reader_files,
            *HH_REDUCED,
            "data.max_length=128",
            "data.max_prompt_length=96",
            f"output_root={tmp_path}",
        )
    )
    check_hh_run(only_run(tmp_path), hh_fixture_repo)


# -- Evaluating a run or a model without training (docs/evaluate.md) ----------------------------

EVALUATE_RUN = f"dpo-exp evaluate run={RUN_FOLDER}"
EVALUATE_CHECKPOINT = f"dpo-exp evaluate run={RUN_FOLDER}/checkpoints/step000200.ckpt"
EVALUATE_HELDOUT = "dpo-exp evaluate run=<run folder> data.validation_path=heldout.jsonl"
EVALUATE_MODEL = "dpo-exp evaluate model=hf model.path=<policy folder> model.ref_path=<base folder> data=pairs data.validation_path=heldout.jsonl loss=dpo beta=0.1"
EVALUATE_BASELINE = "dpo-exp evaluate model=hf model.path=<base> model.ref_path=<base> data=pairs data.validation_path=heldout.jsonl"
EVALUATE_REFERENCE_FREE = "dpo-exp evaluate model=hf model.path=<policy folder> loss=simpo data=pairs data.validation_path=heldout.jsonl"
HELDOUT_ROWS = 30


def evaluated(command: str, files: dict[str, str], output_root: Path) -> tuple[dict, Path, str]:
    """The evaluate command run: its JSON record, the file the block names, and what it printed."""
    result = ok(launch(command, files, f"output_root={output_root}"))
    assert "── evaluation" in result.stdout and "validation pairs ranked right by the reward" in result.stdout
    written = Path(result.stdout.split("written: ", 1)[1].splitlines()[0].strip())
    assert not list(output_root.glob("runs/*/*"))  # the command leaves no run folder of its own
    return json.loads(written.read_text()), written, result.stdout


def validation_rows(run_dir: Path) -> list[dict[str, float]]:
    """The run's `val/*` figures, in order: at step 0, 2 and 4 (the reduced run of train_a_run_to_evaluate)."""
    rows = read_metrics(run_dir / "metrics.csv").dropna(subset=["val/loss"])
    return [{name: float(row[name]) for name in rows.columns if name.startswith("val/") and row[name] == row[name]}
            for _, row in rows.iterrows()]  # fmt: skip


def same_figures(record: dict, logged: dict[str, float]) -> None:
    assert set(record["metrics"]) == set(logged)
    for name, value in logged.items():
        assert record["metrics"][name] == pytest.approx(value, abs=1e-5), name


@runs(EVALUATE_RUN, EVALUATE_CHECKPOINT)
def test_evaluate_gives_a_runs_last_validation_figures_and_a_checkpoints_those_of_its_step(
    evaluated_run, tmp_path
):
    run_dir = Path(evaluated_run["<run folder>"])
    logged = validation_rows(run_dir)
    assert len(logged) == 3
    record, written, printed = evaluated(EVALUATE_RUN, evaluated_run, tmp_path)
    assert record["policy"]["kind"] == "export" and record["policy"]["path"] == str(run_dir / "model")
    assert record["reference"]["kind"] == "the run's initial policy" and "validation loss (ipo)" in printed
    assert record["loss"] == "ipo" and record["beta"] == 0.1 and record["data"]["rows"] == 20
    assert written.parent == run_dir / "evaluations" and f"written: {written}" in printed
    same_figures(record, logged[-1])  # the run's last validation
    record, written, _ = evaluated(EVALUATE_CHECKPOINT, evaluated_run, tmp_path)
    assert record["policy"]["kind"] == "checkpoint" and record["policy"]["step"] == 2
    assert written.parent == run_dir / "evaluations" and written.stem.endswith("-step2")
    same_figures(record, logged[1])  # the validation after step 2


@runs(EVALUATE_HELDOUT, EVALUATE_MODEL)
def test_evaluate_reads_another_file_whole_for_a_run_or_its_export_against_its_base(evaluated_run, tmp_path):
    run_dir, base = Path(evaluated_run["<run folder>"]), evaluated_run["<base folder>"]
    own, written, _ = evaluated(EVALUATE_HELDOUT, evaluated_run, tmp_path)
    assert own["data"]["read"] == evaluated_run["heldout.jsonl"] and own["data"]["rows"] == HELDOUT_ROWS
    assert own["data"]["max_length"] == config_of(run_dir)["data"]["max_length"]
    assert own["loss"] == "ipo" and own["beta"] == 0.1 and own["policy"]["kind"] == "export"
    assert own["data"]["name"] == "pairs-heldout"  # the file read, not the run's training file
    assert written == run_dir / "evaluations" / f"pairs-heldout-{own['data']['digest'][:8]}.json"
    # The run's export as a model of no run, against the model it was trained from (the run's own
    # reference): the same log-probs and log-ratios on the same file, under DPO's loss.
    record, written, printed = evaluated(EVALUATE_MODEL, evaluated_run, tmp_path)
    assert record["policy"] == {**record["policy"], "kind": "model", "path": str(run_dir / "model")}
    assert record["reference"] == {"kind": "model", "path": base} and "validation loss (dpo)" in printed
    assert record["loss"] == "dpo" and record["beta"] == 0.1 and record["data"]["rows"] == HELDOUT_ROWS
    assert written.parent.parent == tmp_path / "evaluations"
    for name in ("val/logps/chosen", "val/logps/rejected", "val/logratio/chosen", "val/logratio/rejected"):
        assert record["metrics"][name] == pytest.approx(own["metrics"][name], abs=1e-5), name


@runs(EVALUATE_BASELINE, EVALUATE_REFERENCE_FREE)
def test_evaluate_gives_the_untrained_baseline_and_a_reference_free_loss_without_a_reference(
    evaluated_run, tmp_path
):
    # The base against itself: DPO's loss ln 2 and margins 0.
    record, _, _ = evaluated(EVALUATE_BASELINE, evaluated_run, tmp_path)
    assert record["reference"] == {"kind": "model", "path": evaluated_run["<base>"]}
    assert record["loss"] == "dpo" and record["data"]["rows"] == HELDOUT_ROWS
    assert record["metrics"]["val/loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert record["metrics"]["val/rewards/margin"] == pytest.approx(0, abs=1e-6)
    # A reference-free loss: none loaded, none named.
    record, _, printed = evaluated(EVALUATE_REFERENCE_FREE, evaluated_run, tmp_path)
    assert record["reference"] is None and record["loss"] == "simpo" and "no reference" in printed
    assert len(list((tmp_path / "evaluations").glob("*/*.json"))) == 2


# -- SFT on demonstrations, then DPO from it (docs/sft_then_dpo.md) -----------------------------

SFT_ON_DEMONSTRATIONS = (
    "dpo-exp sft model=hf model.path=/path/to/base data=demonstrations data.train_path=demos.jsonl"
)
DPO_FROM_SFT = f"python train.py model=hf model.path={SFT_EXPORT} data=pairs data.train_path=pairs.jsonl"


@runs(SFT_ON_DEMONSTRATIONS, DPO_FROM_SFT)
def test_sft_exports_the_model_that_the_dpo_command_starts_from_and_compares_with(tmp_path, reader_files):
    small = [*FAST_TRAINER, "data.val_size=16"]
    result = ok(launch(SFT_ON_DEMONSTRATIONS, reader_files, *small, f"output_root={tmp_path / 'sft'}"))
    sft_run = only_run(tmp_path / "sft")
    summary, config = summary_of(sft_run), config_of(sft_run)
    assert (
        config["data"]["name"] == "demonstrations"
        and config["model"]["path"] == reader_files["/path/to/base"]
    )
    assert summary["loss"] == "rft" and summary["global_step"] == 4
    assert summary["data"]["train"]["rows_read"] == 80 - 16 and math.isfinite(
        summary["metrics"]["val/nll_per_token"]
    )
    assert (
        "validation NLL per completion token, step 0" in result.stdout and "reference: none" in result.stdout
    )
    assert sft_run.parent.name == f"sft_{Path(reader_files['/path/to/base']).name}_demonstrations-demos_seed0"
    export = sft_run / "model"
    assert (export / "model.safetensors").exists() and "sft" in (export / "README.md").read_text()

    files = reader_files | {
        SFT_EXPORT: str(export)
    }  # the page's `outputs/runs/<sft run>/<time>-<hash>/model`
    result = ok(launch(DPO_FROM_SFT, files, *small, f"output_root={tmp_path / 'dpo'}"))
    dpo_run = only_run(tmp_path / "dpo")
    assert config_of(dpo_run)["model"]["path"] == str(export) and summary_of(dpo_run)["loss"] == "dpo"
    assert "reference: frozen model" in result.stdout + result.stderr
    # The SFT model is the policy and the reference: every log-ratio is 0 at the first step, loss ln 2.
    first = read_metrics(dpo_run / "metrics.csv").dropna(subset=["train/loss"])["train/loss"].iloc[0]
    assert first == pytest.approx(math.log(2), abs=1e-4)


# -- Generation scored by a reward (docs/reward_eval.md) ----------------------------------------

SCORED_BY_A_FUNCTION = (
    "python train.py data=pairs data.train_path=prefs.jsonl evaluate.reward=my_module:score"
)
COMPARE_RUNS = "dpo-exp compare outputs/runs"


@runs(SCORED_BY_A_FUNCTION, COMPARE_RUNS)
def test_a_run_scored_by_a_reward_function_reports_its_generation_figures_and_compare_draws_them(
    tmp_path, reader_files
):
    small = [
        *FAST_MODEL,
        *FAST_TRAINER,
        "data.val_size=20",
        "evaluate.prompts=6",
        "evaluate.max_new_tokens=8",
    ]
    result = ok(launch(SCORED_BY_A_FUNCTION, reader_files, *small, f"output_root={tmp_path}"))
    run_dir = only_run(tmp_path)
    generation = summary_of(run_dir)["generation"]
    assert (
        generation["step0"]["kl"] == 0.0 and generation["step0"]["win_rate"] == 0.5
    )  # the policy is its reference
    assert generation["final"]["step"] == 4 and math.isfinite(generation["final"]["reward"])
    assert "win rate against the reference's samples [95% interval]" in result.stdout
    samples = [
        json.loads(line)
        for path in sorted((run_dir / "samples").glob("step_*.jsonl"))
        for line in path.open()
    ]
    assert samples and all(
        row["policy_reward"] == pytest.approx(rewards.score(row["prompt"], row["policy_sample"], None))
        for row in samples
    )
    compared = ok(launch(COMPARE_RUNS, {"outputs/runs": str(tmp_path / "runs")}))
    assert (
        list((tmp_path / "runs" / "compare").glob("group*_reward_kl.png")) and "win rate" in compared.stdout
    )
    table = pd.read_csv(tmp_path / "runs" / "compare" / "runs.csv")
    assert table["eval/reward"].notna().all() and table["eval/kl"].notna().all()


# -- The IMDb experiment (docs/prompt_tasks.md) -------------------------------------------------

IMDB_ON_LOCAL_COPIES = (
    "python train.py experiment=imdb_sentiment task.options.dataset=/data/imdb task.options.revision=null "
    "task.options.tokenizer=/models/gpt2-large task.options.tokenizer_revision=null model.path=/models/gpt2-large "
    "model.revision=null task.reward=/models/sentiment-roberta-large-english task.reward_revision=null"
)
IMDB_BETA = "python train.py --config-dir sweeps --config-name imdb_beta"
# The DPO paper's sizes cut to tests/fixtures/imdb's 48 reviews and a tiny GPT-2 (test_prompt_tasks.py).
IMDB_SMALL = [
    *FAST_TRAINER,
    *IMDB_SIZES,
    "task.splits.sft=18",
    "optim.lr=1e-3",
    "data.max_length=96",
    "sft.steps=10",
]


@runs(IMDB_ON_LOCAL_COPIES, IMDB_BETA)
def test_the_imdb_experiment_on_local_copies_and_its_beta_sweep_give_the_frontier(tmp_path, reader_files):
    # The stand-ins: tests/fixtures/imdb for the dataset, a tiny GPT-2 and the tiny RoBERTa classifier.
    ok(launch(IMDB_ON_LOCAL_COPIES, reader_files, *IMDB_SMALL, f"output_root={tmp_path}"))
    run_dir = only_run(tmp_path)
    summary, config = summary_of(run_dir), config_of(run_dir)
    gpt2, classifier = (
        reader_files["/models/gpt2-large"],
        reader_files["/models/sentiment-roberta-large-english"],
    )
    task = config["task"]
    assert task["options"]["dataset"] == str(IMDB) and task["options"]["tokenizer"] == gpt2
    assert task["reward"] == classifier and task["reward_output"] == "prob:POSITIVE"
    sft = Path(summary["stages"]["sft"]["path"]) / "model"  # fine-tuned from the GPT-2 the command names
    assert (
        config["model"]["path"] == str(sft)
        and json.loads((sft / "config.json").read_text())["model_type"] == "gpt2"
    )
    assert config["sample"]["pair_mode"] == "all" and config["loss"]["name"] == "dpo"
    metrics = summary["metrics"]
    assert 0.0 <= metrics["eval/true_reward"] <= 1.0 and math.isfinite(metrics["eval/kl"])

    # The sweep, its hub ids pointed at the same local copies, at two of its five β.
    local = [
        word for word in arguments(IMDB_ON_LOCAL_COPIES, reader_files) if word != "experiment=imdb_sentiment"
    ]
    reduced = sweeper_params(beta="0.1,1.0")
    ok(launch(IMDB_BETA, reader_files, *reduced, *local, *IMDB_SMALL, f"output_root={tmp_path}"))
    found = members(tmp_path)
    assert list(found) == ["0_beta=0.1", "1_beta=1.0"]
    for member in found.values():  # every member shares the SFT checkpoint and its samples
        stages = summary_of(member)["stages"]
        assert stages["sft"]["reused"] and stages["sample"]["reused"]
        assert stages["sample"]["path"] == summary["stages"]["sample"]["path"]
    (sweep_dir,) = (tmp_path / "sweeps").iterdir()
    printed = subprocess.run([sys.executable, "-m", "dpo_exp.experiment.frontier", str(sweep_dir)],
                             cwd=PROJECT_ROOT, capture_output=True, text=True)  # fmt: skip
    assert ok(printed).stdout.strip()
    rows = frontier_rows(read_summaries([sweep_dir]))
    assert rows[0]["run"] == "SFT model" and sorted(row["beta"] for row in rows[1:]) == [0.1, 1.0]
    assert "SFT model" in printed.stdout
