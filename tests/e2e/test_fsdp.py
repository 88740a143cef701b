"""FSDP2 (`fully_shard`) through Lightning's ModelParallelStrategy, on 2 CPU processes (gloo)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dpo_exp.cli import run
from tests.helpers import FAST, compose_config, train_py

pytestmark = pytest.mark.slow

IN_ORDER = ["data.shuffle=false", "trainer.max_steps=4", "trainer.val_check_interval=4", "optim.eps=1e-3"]


def train_fsdp(output_root: Path, *overrides: str) -> dict:
    """`train.py strategy=fsdp` on 2 processes; the summary of its one run."""
    arguments = [*FAST, "data.batch_size=4", "strategy=fsdp", *overrides, f"output_root={output_root}"]
    result = train_py(*arguments, env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (output_root / "runs").glob("*/*")
    return json.loads((run_dir / "summary.json").read_text())


def test_fsdp_on_two_processes_trains_like_one_process(tmp_path: Path):
    single = run(
        compose_config([*IN_ORDER, "data.batch_size=8", "speed.head_on_completions=false"]), tmp_path / "one"
    )
    summary = train_fsdp(tmp_path / "fsdp", *IN_ORDER)
    assert summary["global_step"] == 4
    for name in ("val/loss", "val/rewards/accuracy", "val/logps/chosen"):
        assert summary["metrics"][name] == pytest.approx(single["metrics"][name], rel=1e-4, abs=1e-4), name


def test_a_sharded_run_resumed_from_its_checkpoint_ends_like_the_uninterrupted_run(tmp_path: Path):
    # A constant learning rate: the resumed run's schedule does not depend on where it started.
    settings = [
        "data.shuffle=false",
        "trainer.max_steps=6",
        "trainer.val_check_interval=2",
        "checkpoint.every_n_steps=2",
        "optim.scheduler=constant_with_warmup",
        "optim.warmup_steps=0",
    ]
    uninterrupted = train_fsdp(tmp_path / "whole", *settings)
    checkpoint = Path(uninterrupted["run_dir"]) / "checkpoints" / "step000004.ckpt"
    assert (checkpoint / "meta.pt").exists()  # a sharded checkpoint is a folder
    resumed = train_fsdp(tmp_path / "resumed", *settings, f"resume={checkpoint}")
    assert resumed["resumed_from"] == str(checkpoint)
    assert resumed["global_step"] == 6
    for name in ("val/loss", "val/logps/chosen", "val/logps/rejected"):
        assert resumed["metrics"][name] == pytest.approx(uninterrupted["metrics"][name], rel=1e-6), name


@pytest.mark.parametrize("logits_chunk", ["null", "8"])
def test_fsdp_scores_completions_with_the_head_alone_as_one_process_does(tmp_path: Path, logits_chunk):
    """With an untied head, decoder and head are FSDP units of their own: the head runs on scored
    positions only (in chunks), not on every position's full-vocabulary logits."""
    untied = [*IN_ORDER, "model.config.tie_word_embeddings=false", f"speed.logits_chunk={logits_chunk}"]
    single = run(compose_config([*untied, "data.batch_size=8"]), tmp_path / "one")
    summary = train_fsdp(tmp_path / "fsdp", *untied)
    assert summary["head_on_completions"] is True
    for name in ("val/loss", "val/logps/chosen", "val/logps/rejected"):
        assert summary["metrics"][name] == pytest.approx(single["metrics"][name], rel=1e-4, abs=1e-4), name
