"""Checkpoints: the newest kept, no reference inside, corrupt ones refused, RNG state round trip."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from dpo_exp.cli import run
from dpo_exp.config import ConfigError
from dpo_exp.training.checkpoints import (
    check_checkpoint,
    find_resume_checkpoint,
    latest_checkpoint,
    restore_rng_state,
    rng_state,
)
from tests.helpers import compose_config


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("run")
    run(
        compose_config(["trainer.max_steps=6", "checkpoint.every_n_steps=2", "checkpoint.keep_last=2"]),
        run_dir,
    )
    return run_dir


def test_the_last_k_checkpoints_are_kept_without_the_reference(finished_run: Path):
    names = sorted(p.name for p in (finished_run / "checkpoints").iterdir())
    assert names == ["step000004.ckpt", "step000006.ckpt"]
    checkpoint = torch.load(finished_run / "checkpoints" / names[-1], weights_only=True)
    assert not any(key.startswith("reference.") for key in checkpoint["state_dict"])
    assert {"optimizer_states", "lr_schedulers", "loops", "rng_state"} <= set(checkpoint)


def test_a_truncated_checkpoint_is_refused_by_name_and_skipped_by_auto(finished_run: Path, tmp_path: Path):
    (tmp_path / "checkpoints").mkdir()
    good = (finished_run / "checkpoints" / "step000004.ckpt").read_bytes()
    (tmp_path / "checkpoints" / "step000004.ckpt").write_bytes(good)
    (tmp_path / "checkpoints" / "step000006.ckpt").write_bytes(good[: len(good) // 2])
    with pytest.raises(ConfigError, match="corrupt or truncated"):
        check_checkpoint(tmp_path / "checkpoints" / "step000006.ckpt")
    assert find_resume_checkpoint("auto", tmp_path).name == "step000004.ckpt"
    with pytest.raises(ConfigError, match="checkpoint not found"):
        find_resume_checkpoint(str(tmp_path / "nope.ckpt"), tmp_path)


def test_resume_auto_with_nothing_to_resume_starts_afresh(tmp_path: Path):
    (tmp_path / "new").mkdir()
    assert find_resume_checkpoint("auto", tmp_path / "new") is None


def test_rng_state_round_trips_through_a_weights_only_load(tmp_path: Path):
    torch.manual_seed(1), random.seed(1), np.random.seed(1)
    torch.save({"rng_state": rng_state()}, tmp_path / "rng.pt")
    expected = (torch.rand(1), random.random(), np.random.rand())
    restore_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True)["rng_state"])
    assert (torch.rand(1), random.random(), np.random.rand()) == expected


def test_a_sharded_checkpoint_folder_without_its_state_file_is_refused_and_skipped(tmp_path: Path):
    # Lightning writes meta.pt after the shards: a folder without it was cut short.
    run_dir = tmp_path / "run"
    folder = run_dir / "checkpoints" / "step000004.ckpt"
    folder.mkdir(parents=True)
    (folder / ".metadata").write_bytes(b"")
    assert find_resume_checkpoint(str(folder), run_dir) == folder  # a checkpoint, not a run folder
    with pytest.raises(ConfigError, match="incomplete"):
        check_checkpoint(folder)
    assert latest_checkpoint(run_dir) is None
    torch.save({"loops": {}, "global_step": 4}, folder / "meta.pt")
    check_checkpoint(folder)
    assert latest_checkpoint(run_dir) == folder
