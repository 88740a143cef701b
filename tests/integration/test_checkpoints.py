"""Checkpoints: the newest kept with their digests, no reference inside, bad ones refused, RNG round trip."""

from __future__ import annotations

import json
import os
import pickle
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from dpo_exp.cli import run
from dpo_exp.config import ConfigError
from dpo_exp.storage import digests_of, write_json_atomically
from dpo_exp.training.checkpoints import (
    check_checkpoint,
    digests_file,
    latest_checkpoint,
    restore_rng_state,
    rng_state,
)
from dpo_exp.training.resume import locate_checkpoint, resume_checkpoint
from tests.helpers import compose_config


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("run")
    run(
        compose_config(["trainer.max_steps=6", "checkpoint.every_n_steps=2", "checkpoint.keep_last=2"]),
        run_dir,
    )
    return run_dir


def copy_checkpoint(source: Path, folder: Path) -> Path:
    """A checkpoint and its digest list, copied into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(source, folder / source.name)
    shutil.copy(digests_file(source), digests_file(folder / source.name))
    return folder / source.name


def test_the_last_k_checkpoints_are_kept_with_their_digests_and_without_the_reference(finished_run: Path):
    names = sorted(p.name for p in (finished_run / "checkpoints").iterdir())
    assert names == [
        "step000004.ckpt",
        "step000004.ckpt.digests.json",
        "step000006.ckpt",
        "step000006.ckpt.digests.json",
    ]
    newest = finished_run / "checkpoints" / "step000006.ckpt"
    record = json.loads(digests_file(newest).read_text())
    assert record["files"] == digests_of([newest], newest.parent)
    assert record["config"]["trainer"]["max_steps"] == 6  # the config of the run that wrote it
    checkpoint = torch.load(newest, weights_only=True)
    assert not any(key.startswith("reference.") for key in checkpoint["state_dict"])
    assert {"optimizer_states", "lr_schedulers", "loops", "rng_state"} <= set(checkpoint)


def test_a_truncated_or_altered_checkpoint_is_refused_by_name_and_skipped(finished_run: Path, tmp_path: Path):
    checkpoints = tmp_path / "checkpoints"
    copy_checkpoint(finished_run / "checkpoints" / "step000004.ckpt", checkpoints)
    cut = copy_checkpoint(finished_run / "checkpoints" / "step000006.ckpt", checkpoints)
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    with pytest.raises(ConfigError, match=r"step000006.ckpt does not match its digests \(changed"):
        check_checkpoint(cut)
    assert latest_checkpoint(tmp_path).name == "step000004.ckpt"
    # Same length, one byte changed inside a tensor: torch would load it; the digest refuses it.
    altered = copy_checkpoint(finished_run / "checkpoints" / "step000006.ckpt", checkpoints)
    data = bytearray(altered.read_bytes())
    data[len(data) // 2] ^= 0xFF
    altered.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match="does not match its digests"):
        check_checkpoint(altered)
    with pytest.raises(ConfigError, match="checkpoint not found"):
        locate_checkpoint(tmp_path / "nope.ckpt")


def test_a_checkpoint_without_its_digest_list_is_refused(finished_run: Path, tmp_path: Path):
    # A kill between the checkpoint and its digest list, or a file from elsewhere.
    shutil.copy(finished_run / "checkpoints" / "step000006.ckpt", tmp_path / "step000006.ckpt")
    with pytest.raises(ConfigError, match="has no digest list"):
        check_checkpoint(tmp_path / "step000006.ckpt")


def test_resume_auto_with_nothing_to_resume_starts_afresh(tmp_path: Path):
    config = {"optim": {"lr": 0.1}}
    assert resume_checkpoint("auto", tmp_path / "runs" / "new", config) is None


def test_rng_state_round_trips_through_a_weights_only_load(tmp_path: Path):
    torch.manual_seed(1), random.seed(1), np.random.seed(1)
    torch.save({"rng_state": rng_state()}, tmp_path / "rng.pt")
    expected = (torch.rand(1), random.random(), np.random.rand())
    restore_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True)["rng_state"])
    assert (torch.rand(1), random.random(), np.random.rand()) == expected


def sharded_checkpoint(folder: Path, state: dict) -> Path:
    """A distributed-checkpoint folder as Lightning writes it under FSDP: shards, index, meta.pt, digests."""
    import torch.distributed.checkpoint as dcp

    with pytest.warns(UserWarning, match="single process"):
        dcp.save(state, checkpoint_id=folder)
    torch.save({"loops": {}, "global_step": 4}, folder / "meta.pt")
    write_json_atomically({"files": digests_of([folder], folder.parent), "config": {}}, digests_file(folder))
    return folder


def test_a_sharded_checkpoint_folder_is_checked_and_one_without_its_state_file_refused(tmp_path: Path):
    run_dir = tmp_path / "run"
    folder = run_dir / "checkpoints" / "step000004.ckpt"
    state = {
        "model": {"w": torch.ones(3, 2)},
        "optimizer": {"param_groups": [{"lr": 0.1, "betas": (0.9, 0.99)}]},
    }
    sharded_checkpoint(folder, state)
    check_checkpoint(folder)
    assert locate_checkpoint(folder) == folder  # a checkpoint, not a run folder
    assert latest_checkpoint(run_dir) == folder
    # Lightning writes meta.pt after the shards: a folder without it was cut short.
    (folder / "meta.pt").unlink()
    write_json_atomically({"files": digests_of([folder], folder.parent), "config": {}}, digests_file(folder))
    with pytest.raises(ConfigError, match="incomplete"):
        check_checkpoint(folder)
    assert latest_checkpoint(run_dir) is None


class Payload:
    """Pickles as a call to os.system: what a crafted checkpoint would run as it loads."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_index_is_refused_without_running_its_payload(tmp_path: Path):
    folder = sharded_checkpoint(tmp_path / "step000004.ckpt", {"model": {"w": torch.ones(2)}})
    marker = tmp_path / "payload_ran"
    (folder / ".metadata").write_bytes(pickle.dumps(Payload(marker)))
    # Its digest list matches: a crafted folder can carry one, so the index itself is checked.
    write_json_atomically({"files": digests_of([folder], folder.parent), "config": {}}, digests_file(folder))
    with pytest.raises(ConfigError, match=r"refused: its \.metadata refers to posix\.system"):
        check_checkpoint(folder)
    assert not marker.exists()


def test_a_shard_item_that_would_run_code_is_refused_without_running_it(tmp_path: Path):
    marker = tmp_path / "payload_ran"
    folder = sharded_checkpoint(
        tmp_path / "step000004.ckpt", {"model": {"w": torch.ones(2)}, "x": Payload(marker)}
    )
    with pytest.raises(ConfigError, match="item x does not load weights-only"):
        check_checkpoint(folder)
    assert not marker.exists()
