"""Run and sweep-member folder names say what ran: loss, rounds, model, data, β where it means something."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from dpo_exp.config.naming import (
    SWEPT_KEYS,
    SweepNaming,
    new_run_folder,
    run_name,
    sweep_member,
    swept_keys,
)
from dpo_exp.training.resume import unfinished_siblings
from dpo_exp.training.run_files import CONFIG, new_folder
from tests.helpers import compose_config


@pytest.mark.parametrize(
    ("overrides", "name"),
    [
        ([], "dpo_tiny_arithmetic_beta2.0_seed0"),  # the default job
        (["loss=rft"], "rft_tiny_arithmetic_seed0"),  # RFT has no β
        (["loss=ipo", "beta=0.5", "seed=3"], "ipo_tiny_arithmetic_beta0.5_seed3"),
        (["data=gsm8k"], "dpo_tiny_gsm8k_beta0.1_seed0"),
        (["online.rounds=2"], "dpo_online2_tiny_arithmetic_beta2.0_seed0"),
        (
            ["online.rounds=3", "online.reference=previous"],
            "dpo_online3-previous_tiny_arithmetic_beta2.0_seed0",
        ),
        (["data=synthetic", "loss=orpo"], "orpo_tiny_synthetic_beta0.1_seed0"),  # λ is `beta` for ORPO
        (
            ["data=synthetic", "model=hf", "model.path=/models/Qwen/my-sft/"],
            "dpo_my-sft_synthetic_beta0.1_seed0",
        ),
        (["data=synthetic", "model=qwen2"], "dpo_qwen2_synthetic_beta0.1_seed0"),
    ],
)
def test_run_name_is_derived_from_what_runs(overrides, name):
    cfg = compose_config(overrides, fast=False)
    assert cfg.run_name == name == run_name(cfg)


def test_your_own_data_file_names_the_run(tmp_path: Path):
    (tmp_path / "prefs.train.jsonl").write_text("")
    cfg = compose_config(["data=pairs", f"data.train_path={tmp_path / 'prefs.train.jsonl'}"], fast=False)
    assert cfg.run_name == "dpo_tiny_pairs-prefs_beta0.1_seed0"


def test_fine_tuning_on_demonstrations_is_named_sft(tmp_path: Path):
    (tmp_path / "demos.jsonl").write_text("")
    cfg = compose_config(["data=demonstrations", f"data.train_path={tmp_path / 'demos.jsonl'}"], fast=False)
    assert cfg.loss.name == "rft" and cfg.run_name == "sft_tiny_demonstrations-demos_seed0"


def test_swept_keys_come_from_sweep_overrides_and_the_sweepers_params():
    overrides = ["beta=0.1,0.5", "loss=dpo,ipo", "output_root=/tmp/x", "seed=range(0,3)", "data=synthetic"]
    assert swept_keys(overrides, {"optim.lr": "tag(log, interval(1e-5, 1e-3))"}) == [
        "beta",
        "loss",
        "seed",
        "optim.lr",
    ]
    assert swept_keys(["beta=0.1"], None) == []


def test_a_member_folder_says_what_its_sweep_varies(monkeypatch):
    monkeypatch.setenv(SWEPT_KEYS, "loss,beta")
    member = ["output_root=/tmp/x", "beta=0.5", "data=synthetic", "loss=ipo"]
    assert sweep_member(member, "fallback") == "loss=ipo,beta=0.5"  # in the sweep's order
    monkeypatch.setenv(SWEPT_KEYS, "")
    assert sweep_member(member, "fallback") == "fallback"


def test_a_multirun_notes_its_swept_keys_from_the_command_line_and_the_sweep_file(monkeypatch):
    monkeypatch.setenv(SWEPT_KEYS, "")
    config = OmegaConf.create(
        {
            "hydra": {
                "sweeper": {"params": {"loss": "dpo,ipo", "beta": "0.01,0.1"}},  # as sweeps/beta_grid.yaml
                "overrides": {"task": ["seed=0,1", "output_root=/x"]},
            }
        }
    )
    SweepNaming().on_multirun_start(config)
    assert os.environ[SWEPT_KEYS] == "seed,loss,beta"


def test_a_run_folder_taken_in_the_same_second_is_followed_by_a_numbered_one(tmp_path: Path, monkeypatch):
    monkeypatch.setattr("dpo_exp.config.naming.MADE_FOLDERS", {})
    base = tmp_path / "runs" / "dpo_x" / "20260101-120000-abcd1234"
    first = new_run_folder(str(base))
    assert first == str(base) and base.is_dir()
    assert new_run_folder(str(base)) == first  # Hydra resolves the name more than once: one folder
    monkeypatch.setattr("dpo_exp.config.naming.MADE_FOLDERS", {})  # as another process would ask
    assert new_run_folder(str(base)) == f"{base}-2"
    (tmp_path / "runs" / "dpo_x" / f"{base.name}-3").write_text("")  # a file holds the name too
    assert new_folder(base) == base.with_name(f"{base.name}-4")
    # resume=auto looks at unfinished runs beside its folder newest first: a numbered one is newer.
    for folder in (base, base.with_name(f"{base.name}-2")):
        (folder / CONFIG).write_text("seed: 0\n")
    assert unfinished_siblings(base.with_name("20260101-120001-abcd1234"))[:2] == [Path(f"{base}-2"), base]


def test_a_run_folder_that_cannot_be_made_is_named_as_asked(tmp_path: Path, monkeypatch):
    monkeypatch.setattr("dpo_exp.config.naming.MADE_FOLDERS", {})
    (tmp_path / "runs").write_text("")  # a file where the folder's parent should be
    base = tmp_path / "runs" / "dpo_x" / "20260101-120000-abcd1234"
    assert new_run_folder(str(base)) == str(base)  # the output-folder check says why, in one line
    assert not base.exists()
