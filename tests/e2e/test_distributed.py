"""Lightning DDP on 2 CPU processes (gloo): same trajectory as one process, and inside a sweep."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dpo_exp.cli import run
from dpo_exp.training.ref_cache import read_cache_file
from tests.conftest import PROJECT_ROOT
from tests.helpers import FAST, compose_config, train_losses, train_py

pytestmark = pytest.mark.slow

# Adam's first steps are nearly sign(gradient): a large eps keeps gradient components that differ
# only by summation order (two processes, other thread counts) from flipping whole updates.
IN_ORDER = [
    "data.shuffle=false",
    "trainer.max_steps=4",
    "trainer.val_check_interval=4",
    "optim.warmup_steps=0",
    "optim.eps=1e-3",
]


def launch(*arguments: str, multirun: bool = False) -> subprocess.CompletedProcess:
    return train_py(*FAST, *arguments, multirun=multirun, env={"OMP_NUM_THREADS": "1"})


def test_ddp_on_two_processes_matches_one_process_with_the_same_global_batch(tmp_path: Path):
    # One process, 8 pairs a step; two processes, 4 pairs each: rank r takes examples r, r+2, ...
    # so every step sees the same 8 pairs, and DDP averages the two halves' gradients.
    single = run(compose_config([*IN_ORDER, "data.batch_size=8"]), tmp_path / "single")
    result = launch(*IN_ORDER, "data.batch_size=4", "strategy=ddp", f"output_root={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    (ddp_dir,) = (tmp_path / "runs").glob("*/*")
    assert train_losses(ddp_dir) == pytest.approx(train_losses(tmp_path / "single"), abs=1e-5)
    ddp_summary = json.loads((ddp_dir / "summary.json").read_text())
    for name in ("val/loss", "val/rewards/accuracy", "val/rewards/margin"):
        assert ddp_summary["metrics"][name] == pytest.approx(single["metrics"][name], abs=1e-5), name
    assert ddp_summary["metrics"]["val/rewards/accuracy"] <= 1.0


def test_batch_size_accumulation_and_ranks_at_one_effective_batch_make_the_same_updates(tmp_path: Path):
    # 8 pairs a step as 8 × 1 micro-batch × 1 process, 4 × 2 × 1, and 2 × 2 × 2 processes.
    whole = run(compose_config([*IN_ORDER, "data.batch_size=8"]), tmp_path / "whole")
    accumulated = run(
        compose_config([*IN_ORDER, "data.batch_size=4", "trainer.accumulate_grad_batches=2"]),
        tmp_path / "accumulated",
    )
    result = launch(
        *IN_ORDER,
        "data.batch_size=2",
        "trainer.accumulate_grad_batches=2",
        "strategy=ddp",
        f"output_root={tmp_path}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (ddp_dir,) = (tmp_path / "runs").glob("*/*")
    distributed = json.loads((ddp_dir / "summary.json").read_text())
    assert whole["global_step"] == accumulated["global_step"] == distributed["global_step"] == 4
    for name in ("val/loss", "val/rewards/margin", "val/logps/chosen", "val/logratio/rejected"):
        expected = whole["metrics"][name]
        assert accumulated["metrics"][name] == pytest.approx(expected, abs=1e-5), name
        assert distributed["metrics"][name] == pytest.approx(expected, abs=1e-5), name


def test_ddp_inside_a_multirun_runs_each_member_once(tmp_path: Path):
    result = launch(
        "strategy=ddp", "trainer.max_steps=2", "beta=0.1,0.5", f"output_root={tmp_path}", multirun=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    members = sorted((tmp_path / "sweeps").glob("*/*_beta*"))
    assert [m.name.split("_")[0] for m in members] == ["0", "1"]  # no member re-ran the sweep
    for member, beta in zip(members, (0.1, 0.5), strict=True):
        summary = json.loads((member / "summary.json").read_text())
        assert summary["beta"] == beta and summary["global_step"] == 2
    assert len(list((tmp_path / "sweeps").iterdir())) == 1  # one sweep folder, not one per worker


def test_a_rank_killed_mid_run_is_named_by_the_one_left(tmp_path: Path):
    # Long enough to be mid-training at the kill; the first checkpoint says the loop is running.
    arguments = [*FAST, "strategy=ddp", "trainer.max_steps=2000", "checkpoint.every_n_steps=5"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    launcher = subprocess.Popen(
        [sys.executable, "train.py", *arguments, f"output_root={tmp_path}"],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 240
    while not list(tmp_path.glob("runs/*/*/checkpoints/*.digests.json")):
        assert launcher.poll() is None, launcher.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    # Rank 1 is the process rank 0 started (Lightning re-runs the command line for it).
    (worker,) = Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children").read_text().split()
    os.kill(int(worker), signal.SIGKILL)
    killed = time.monotonic()
    stderr = launcher.communicate(timeout=120)[1]
    assert time.monotonic() - killed < 30  # the survivor does not hang on its dead peer
    assert launcher.returncode == 1
    message = (
        "rank 1 of 2 stopped (its process died or was killed); this run failed: resume it with resume=auto"
    )
    assert message in stderr.splitlines()
    assert "Traceback" not in stderr and "by peer" not in stderr  # gloo: "Connection reset by peer"
    (run_dir,) = tmp_path.glob("runs/*/*")
    failed = (run_dir / "failed.txt").read_text()
    assert failed.startswith(f"LostRankError: {message}")
    assert "Traceback" in failed and "gloo" in failed  # the survivor's own error, kept in the record
    assert not (run_dir / "summary.json").exists()


def test_two_ranks_each_score_half_of_the_reference_cache_and_write_one_file(tmp_path: Path):
    """The cache of a DDP run is scored by both ranks, each taking every other example, once the
    strategy has started them; the file equals the one a single process writes."""
    single = run(
        compose_config([*IN_ORDER, "reference.cache=true", f"reference.cache_dir={tmp_path / 'one'}"]),
        tmp_path / "single",
    )
    cache = ["reference.cache=true", f"reference.cache_dir={tmp_path / 'two'}"]
    result = launch(*IN_ORDER, "data.batch_size=4", "strategy=ddp", *cache, f"output_root={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "built reference log-probs" in result.stdout and "(2 ranks)" in result.stdout
    (one,), (two,) = (tmp_path / "one").glob("*.safetensors"), (tmp_path / "two").glob("*.safetensors")
    assert one.name == two.name  # the same key: the same reference, data and precision
    _, expected = read_cache_file(one)
    _, scored = read_cache_file(two)
    assert expected.keys() == scored.keys()
    for name, values in expected.items():
        torch.testing.assert_close(scored[name], values, rtol=1e-5, atol=1e-5)
    (ddp_dir,) = (tmp_path / "runs").glob("*/*")
    ddp = json.loads((ddp_dir / "summary.json").read_text())
    assert ddp["step_zero"]["max_abs_logratio"] < 1e-4
    assert ddp["metrics"]["val/loss"] == pytest.approx(single["metrics"]["val/loss"], abs=1e-5)


@pytest.mark.parametrize(
    "precision",
    [
        ["trainer.precision=32-true"],
        ["trainer.precision=bf16-mixed"],
        ["trainer.precision=bf16-true"],
        ["model.dtype=bfloat16"],
    ],
    ids=["32-true", "bf16-mixed", "bf16-true", "bf16 weights"],
)
def test_every_precision_under_ddp_with_its_cache_starts_from_its_reference(tmp_path: Path, precision):
    cache = ["reference.cache=true", f"reference.cache_dir={tmp_path / 'cache'}", "speed.pack=true"]
    result = launch(
        *IN_ORDER, "data.batch_size=4", "strategy=ddp", *precision, *cache, f"output_root={tmp_path}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (ddp_dir,) = (tmp_path / "runs").glob("*/*")
    summary = json.loads((ddp_dir / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["reference_cached"]
    assert summary["step_zero"]["max_abs_logratio"] == 0  # each rank's share scored as the policy runs
    assert summary["step_zero"]["loss"] == pytest.approx(summary["step_zero"]["loss_at_zero"], abs=1e-6)
