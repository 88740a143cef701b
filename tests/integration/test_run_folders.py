"""Run folders and resume: a run continues only a run of its own config, never a finished one, and
never writes into a folder that holds another run or that another process holds."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from dpo_exp.cli import run
from dpo_exp.config import ConfigError
from dpo_exp.training.resume import resume_checkpoint
from dpo_exp.training.run_files import FINISHED_IN, claim_run_dir, resolved
from tests.helpers import FAST_MODEL, FAST_TRAINER, compose_config

STEPS = ["checkpoint.every_n_steps=2", "trainer.val_check_interval=2"]


def killed_run(folder: Path, *overrides: str) -> Path:
    """A run killed after its last checkpoint (step 4): what a SIGKILL leaves, without the wait."""
    run(compose_config([*STEPS, "trainer.max_steps=4", *overrides]), folder)
    (folder / "summary.json").unlink()
    shutil.rmtree(folder / "model")
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """runs/<name>/: one killed run at lr 5e-4."""
    root = tmp_path_factory.mktemp("runs")
    killed_run(root / "20260101-000000-aaaaaaaa", "optim.lr=5e-4")
    return root


def test_resume_auto_passes_over_a_killed_run_of_another_config_and_says_why(runs: Path, capsys):
    cfg = compose_config([*STEPS, "trainer.max_steps=4", "optim.lr=2e-3", "resume=auto"])
    assert resume_checkpoint("auto", runs / "20260101-000100-bbbbbbbb", resolved(cfg)) is None
    out = capsys.readouterr().out
    assert "not continuing" in out and "optim.lr: 0.0005 -> 0.002" in out
    assert "no unfinished run of this config to continue; starting afresh" in out


def test_a_fresh_run_names_a_killed_run_of_its_config_that_resume_auto_would_continue(runs: Path, capsys):
    cfg = compose_config([*STEPS, "trainer.max_steps=4", "optim.lr=5e-4"])
    assert resume_checkpoint(None, runs / "20260101-000100-bbbbbbbb", resolved(cfg)) is None
    killed = runs / "20260101-000000-aaaaaaaa"
    out = capsys.readouterr().out
    assert f"note: {killed} is an unfinished run of this config (checkpoint at step 4)" in out


def test_an_explicit_checkpoint_of_another_config_is_refused(runs: Path, tmp_path: Path):
    checkpoint = runs / "20260101-000000-aaaaaaaa" / "checkpoints" / "step000004.ckpt"
    cfg = compose_config([*STEPS, "trainer.max_steps=6", "optim.lr=2e-3", f"resume={checkpoint}"])
    with pytest.raises(ConfigError, match=r"another config \(differs in optim.lr: 0.0005 -> 0.002\)"):
        run(cfg, tmp_path / "new")


def test_resume_auto_continues_a_run_of_its_config_once_and_never_a_finished_one(tmp_path: Path, capsys):
    killed = killed_run(tmp_path / "20260101-000000-aaaaaaaa")
    # The step budget may change on resume; the rest of the config may not.
    cfg = compose_config([*STEPS, "trainer.max_steps=6", "resume=auto"])
    summary = run(cfg, tmp_path / "20260101-000100-bbbbbbbb")
    assert summary["resumed_from"] == str(killed / "checkpoints" / "step000004.ckpt")
    assert summary["global_step"] == 6
    assert (killed / FINISHED_IN).read_text().strip() == str(tmp_path / "20260101-000100-bbbbbbbb")
    capsys.readouterr()
    # Both runs are now finished: nothing is continued again.
    assert resume_checkpoint("auto", tmp_path / "20260101-000200-cccccccc", resolved(cfg)) is None
    assert "starting afresh" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="is a finished run; a finished run is never resumed"):
        run(compose_config([*STEPS, f"resume={tmp_path / '20260101-000100-bbbbbbbb'}"]), tmp_path / "other")
    with pytest.raises(ConfigError, match="holds a finished run"):
        run(compose_config([*STEPS, "resume=auto"]), tmp_path / "20260101-000100-bbbbbbbb")


def test_a_fresh_run_into_a_folder_that_holds_a_run_is_refused(runs: Path):
    with pytest.raises(ConfigError, match="already holds an unfinished run; resume=auto continues it"):
        run(compose_config([*STEPS, "optim.lr=5e-4"]), runs / "20260101-000000-aaaaaaaa")


def test_a_folder_another_process_holds_is_refused_before_anything_is_written(tmp_path: Path):
    claim = claim_run_dir(tmp_path / "run")
    try:
        with pytest.raises(ConfigError, match="is in use by another process"):
            run(compose_config(), tmp_path / "run")
    finally:
        claim.release()
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [".claim"]


def write_pairs(path: Path, answer: str) -> Path:
    rows = [{"prompt": f"{i}+1=", "chosen": str(i + 1), "rejected": answer} for i in range(40)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_resume_auto_refuses_a_run_whose_data_changed_under_the_same_name(tmp_path: Path):
    data_file = write_pairs(tmp_path / "pairs.jsonl", "0")
    data = ["data=pairs", f"data.train_path={data_file}", "data.val_size=8", *FAST_MODEL, *FAST_TRAINER]
    run(compose_config([*data, *STEPS, "trainer.max_steps=4"], fast=False), tmp_path / "runs" / "a")
    (tmp_path / "runs" / "a" / "summary.json").unlink()  # killed after its last checkpoint
    write_pairs(data_file, "7")  # the same file name, other rejected answers
    cfg = compose_config([*data, *STEPS, "trainer.max_steps=6", "resume=auto"], fast=False)
    with pytest.raises(ConfigError) as refused:
        run(cfg, tmp_path / "runs" / "b")
    assert str(refused.value).startswith(
        f"resume: the train and validation data differ from those {tmp_path / 'runs' / 'a'} was trained on"
    )
    write_pairs(data_file, "0")  # the data it was trained on: continued
    assert run(cfg, tmp_path / "runs" / "c")["global_step"] == 6
