"""`dpo-exp evaluate`: a run's policy evaluated after training gives the figures the run logged
(its export, its last `val/*` row; a checkpoint, that step's row), and the reference rules."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from dpo_exp.cli import run
from dpo_exp.config.evaluation import run_evaluation
from dpo_exp.errors import ConfigError
from dpo_exp.training.metrics_file import read_metrics
from tests.helpers import FAST_MODEL, FAST_TRAINER, compose_config

# 48 pairs, 12 cut for validation: 4 steps of 8, validated at steps 0, 2 and 4; a checkpoint at 2.
TRAINING = [*FAST_MODEL, *FAST_TRAINER, "data.val_size=12", "data.batch_size=8", "data.eval_batch_size=5",
            "checkpoint.every_n_steps=2"]  # fmt: skip


def write_pairs(path: Path, count: int, start: int = 0) -> Path:
    rows = [
        {"prompt": f"What is {i}+{i}?", "chosen": str(2 * i), "rejected": str(2 * i + 1)}
        for i in range(start, start + count)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def trained_run(folder: Path, *extra: str) -> Path:
    pairs = write_pairs(folder / "pairs.jsonl", 48)
    arguments = ["data=pairs", f"data.train_path={pairs}", *TRAINING, f"output_root={folder}", *extra]
    run(compose_config(arguments, fast=False), folder / "run")
    return folder / "run"


@pytest.fixture(scope="module")
def dpo_run(tmp_path_factory) -> Path:
    return trained_run(tmp_path_factory.mktemp("evaluate_dpo"))


def evaluated(run_dir: Path | None, *overrides: str, run_path: str | None = None) -> tuple[dict, str]:
    """`dpo-exp evaluate [run=...] overrides` without Hydra's launcher: the record and the block."""
    groups = (
        ["data=pairs"] if run_dir is not None and not any(o.startswith("data=") for o in overrides) else []
    )
    cfg = compose_config([*groups, *overrides], fast=False)
    target = run_path or (None if run_dir is None else str(run_dir))
    block = run_evaluation(cfg, list(overrides), target, list(overrides))
    written = Path(block.rsplit("written: ", 1)[1].strip())
    return json.loads(written.read_text()), block


def validation_rows(run_dir: Path):
    """The run's `val/*` rows in order: before training, after step 2, after step 4."""
    metrics = read_metrics(run_dir / "metrics.csv").dropna(subset=["val/loss"])
    return metrics[[column for column in metrics.columns if column.startswith("val/")]].reset_index(drop=True)


def assert_same_figures(record: dict, logged) -> None:
    logged = {name: float(value) for name, value in logged.items() if not math.isnan(value)}
    assert set(record["metrics"]) == set(logged)
    for name, value in logged.items():
        assert record["metrics"][name] == pytest.approx(value, abs=1e-5), name


def test_the_runs_export_gives_its_last_validation_figures(dpo_run):
    record, block = evaluated(dpo_run)
    assert_same_figures(record, validation_rows(dpo_run).loc[2])
    assert record["policy"]["kind"] == "export" and record["reference"]["kind"] == "the run's initial policy"
    digest = json.loads((dpo_run / "data_digest.json").read_text())["validation"]
    assert record["data"]["digest"] == digest and record["data"]["rows"] == 12
    assert (dpo_run / "evaluations" / f"pairs-pairs-{digest[:8]}.json").is_file()
    assert "validation loss (dpo)" in block and "reward margin" in block


def test_a_checkpoint_gives_the_validation_figures_of_its_step(dpo_run):
    (checkpoint,) = (dpo_run / "checkpoints").glob("step*2.ckpt")
    record, _ = evaluated(dpo_run, run_path=str(checkpoint))
    assert_same_figures(record, validation_rows(dpo_run).loc[1])
    assert record["policy"] == {**record["policy"], "kind": "checkpoint", "step": 2}
    assert not list((dpo_run / "evaluations").glob("*.partial*"))


def test_another_file_is_read_whole_with_the_runs_truncation(dpo_run, tmp_path):
    other = write_pairs(tmp_path / "heldout.jsonl", 7, start=100)
    record, _ = evaluated(dpo_run, f"data.validation_path={other}")
    assert record["data"]["rows"] == 7 and record["data"]["read"] == str(other)
    assert record["data"]["max_length"] == 512 and record["loss"] == "dpo"
    assert record["data"]["name"] == "pairs-heldout"  # the file read, not the run's training file


def test_a_model_against_itself_is_the_untrained_baseline(dpo_run):
    model = dpo_run / "model"
    record, _ = evaluated(None, "model=hf", f"model.path={model}", f"model.ref_path={model}", "data=pairs",
                          f"data.validation_path={dpo_run.parent / 'pairs.jsonl'}",
                          f"output_root={dpo_run.parent}")  # fmt: skip
    assert record["metrics"]["val/loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert record["metrics"]["val/rewards/margin"] == pytest.approx(0, abs=1e-6)
    assert record["data"]["rows"] == 48 and record["reference"] == {"kind": "model", "path": str(model)}


def test_a_reference_free_loss_needs_no_reference(dpo_run):
    record, block = evaluated(None, "model=hf", f"model.path={dpo_run / 'model'}", "loss=simpo", "data=pairs",
                              f"data.validation_path={dpo_run.parent / 'pairs.jsonl'}",
                              f"output_root={dpo_run.parent}")  # fmt: skip
    assert record["reference"] is None and "no reference" in block
    assert "val/logratio/chosen" not in record["metrics"]


@pytest.mark.parametrize(
    ("overrides", "refused"),
    [
        (["loss=dpo"], "model.ref_path: loss=dpo compares the policy with a reference, and none is"),
        (["loss=simpo", "model.ref_path={model}"], "model.ref_path: has no effect: loss=simpo uses no"),
        (["loss=bco", "model.ref_path={model}"], "loss=bco: its reward shift is the mean reward seen in"),
        (["model.ref_path={model}", "optim.lr=1e-5"], "optim.lr: has no effect: evaluate trains nothing"),
        (["model.ref_path={model}", "data.validation_path=null"], "data.validation_path: name the set"),
    ],
)  # fmt: skip
def test_the_reference_and_data_of_a_model_are_named_or_refused(dpo_run, overrides, refused):
    model = dpo_run / "model"
    given = [o.format(model=model) for o in overrides]
    with pytest.raises(ConfigError, match=refused.replace("(", r"\(")):
        evaluated(None, "model=hf", f"model.path={model}", "data=pairs",
                  f"data.validation_path={dpo_run.parent / 'pairs.jsonl'}", *given)  # fmt: skip


def test_a_model_of_no_saved_weights_is_refused():
    with pytest.raises(ConfigError, match="model.path: model=tiny is built from its config"):
        evaluated(None, "data=pairs")


@pytest.mark.parametrize(
    ("overrides", "refused"),
    [
        (["model.ref_path=/elsewhere"], "model.ref_path: has no effect: the run's own model, reference"),
        (["seed=3"], "seed: has no effect: the run's own model, reference and seed"),
        (["trainer.max_steps=9"], "trainer.max_steps: has no effect: evaluate trains nothing"),
        (["data.train_path=/x.jsonl"], "data.train_path: has no effect: evaluate reads no training data"),
    ],
)
def test_a_runs_model_and_reference_are_its_own(dpo_run, overrides, refused):
    with pytest.raises(ConfigError, match=refused):
        evaluated(dpo_run, *overrides)


def test_a_run_folder_without_a_config_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="is not a run folder"):
        evaluated(None, run_path=str(tmp_path))


def test_kto_on_unpaired_examples_gives_the_runs_figures(tmp_path):
    run_dir = trained_run(tmp_path, "loss=kto")
    cfg = compose_config([*FAST_MODEL, "data=pairs", "loss=kto"], fast=False)
    block = run_evaluation(cfg, [], str(run_dir), [])
    record = json.loads(Path(block.rsplit("written: ", 1)[1].strip()).read_text())
    assert not record["paired"] and "val/kl" in record["metrics"]
    assert_same_figures(record, validation_rows(run_dir).loc[2])
