"""Whole runs through `run(cfg, run_dir)` on tiny models: data sources, models, determinism."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import yaml

from dpo_exp.cli import run
from dpo_exp.commands import data_report
from dpo_exp.data.records import DataError
from tests.conftest import PREFERENCES
from tests.helpers import FAST_DATA, FAST_MODEL, FAST_TRAINER, SINGLE_RUN, compose_config

TWO_STEPS = ["trainer.max_steps=2", "trainer.val_check_interval=2"]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def model_metrics(summary: dict) -> dict[str, float]:
    """Everything but timings, which differ from run to run."""
    return {name: value for name, value in summary["metrics"].items() if not name.startswith("perf/")}


def test_same_config_and_seed_give_the_same_metrics(tmp_path: Path):
    first = model_metrics(run(compose_config([]), tmp_path / "a"))
    second = model_metrics(run(compose_config([]), tmp_path / "b"))
    other_seed = model_metrics(run(compose_config(["seed=1"]), tmp_path / "c"))
    assert first == second
    assert first["val/loss"] != other_seed["val/loss"]


@pytest.mark.real_data
def test_hh_rlhf_rows_from_the_mirror_laid_out_as_the_hub_repository(tmp_path: Path, hh_rlhf_repo: Path):
    overrides = [
        "data=hh_helpful",
        f"data.dataset={hh_rlhf_repo}",
        "data.revision=null",
        "+data.options.max_rows=48",
        "data.max_length=192",
        "data.max_prompt_length=128",
        *TWO_STEPS,
    ]
    summary = run(compose_config(SINGLE_RUN + FAST_MODEL + FAST_TRAINER + overrides, fast=False), tmp_path)
    assert summary["global_step"] == 2
    assert summary["data"]["train"]["rows_read"] == 48
    assert summary["data"]["train"]["source"] == f"{hh_rlhf_repo} (data_dir helpful-base, split train)"
    assert summary["data"]["validation"]["source"] == f"{hh_rlhf_repo} (data_dir helpful-base, split test)"
    assert summary["metrics"]["val/logps/chosen"] < 0


def test_pretrained_model_by_local_path(tmp_path: Path, tiny_model_dir: Path):
    overrides = ["model=hf", f"model.path={tiny_model_dir}", *TWO_STEPS]
    summary = run(compose_config(SINGLE_RUN + FAST_DATA + FAST_TRAINER + overrides, fast=False), tmp_path)
    assert summary["global_step"] == 2


def test_conversational_pairs_rendered_with_the_chat_template(tmp_path: Path):
    rows = [
        {
            "prompt": [{"role": "user", "content": f"What is {i}+{i}?"}],
            "chosen": [{"role": "assistant", "content": str(2 * i)}],
            "rejected": [{"role": "assistant", "content": str(2 * i + 1)}],
        }
        for i in range(40)
    ]
    data_file = write_jsonl(tmp_path / "chat.jsonl", rows)
    overrides = [
        "data=pairs",
        f"data.train_path={data_file}",
        "data.val_size=8",
        "data.batch_size=8",
        "data.max_length=64",
        "data.max_prompt_length=48",
        *TWO_STEPS,
    ]
    cfg = compose_config(SINGLE_RUN + FAST_MODEL + FAST_TRAINER + overrides, fast=False)
    text = data_report(cfg)
    assert "32 rows read, 32 kept" in text and "8 rows read, 8 kept" in text
    summary = run(cfg, tmp_path / "run")
    assert summary["global_step"] == 2


ULTRAFEEDBACK_CARD = """---
configs:
- config_name: default
  data_files:
  - split: train_prefs
    path: data/train_prefs.jsonl.gz
  - split: test_prefs
    path: data/test_prefs.jsonl.gz
---
"""


def test_the_ultrafeedback_preset_on_a_local_copy_of_its_repository(tmp_path: Path):
    # Laid out as HuggingFaceH4/ultrafeedback_binarized (its split names, a text prompt column
    # beside whole conversations): the shipped conversations stand in for its rows.
    repo = tmp_path / "ultrafeedback_binarized"
    (repo / "data").mkdir(parents=True)
    for split, name in (("train", "train_prefs"), ("test", "test_prefs")):
        source = PREFERENCES / "implicit_conversational" / f"{split}.jsonl.gz"
        (repo / "data" / f"{name}.jsonl.gz").symlink_to(source)
    (repo / "README.md").write_text(ULTRAFEEDBACK_CARD)
    overrides = ["data=ultrafeedback", f"data.dataset={repo}", "data.revision=null",
                 "+data.options.max_rows=16", "data.max_length=256", "data.max_prompt_length=192",
                 *TWO_STEPS]  # fmt: skip
    cfg = compose_config(SINGLE_RUN + FAST_MODEL + FAST_TRAINER + overrides, fast=False)
    text = data_report(cfg)
    assert f"read from {repo} (split train_prefs), format: implicit prompt (conversational)" in text
    summary = run(cfg, tmp_path / "run")
    assert summary["global_step"] == 2 and summary["data"]["validation"]["source"].endswith(
        "split test_prefs)"
    )


def test_kto_on_unpaired_records(tmp_path: Path):
    rows = [
        {"prompt": f"{i}+{i}=", "completion": str(2 * i + (i % 2)), "label": i % 2 == 0} for i in range(48)
    ]
    data_file = write_jsonl(tmp_path / "kto.jsonl", rows)
    overrides = [
        "loss=kto",
        "data=unpaired",
        f"data.train_path={data_file}",
        "data.val_size=8",
        "data.batch_size=8",
        "data.max_length=32",
        "data.max_prompt_length=16",
        *TWO_STEPS,
    ]
    summary = run(
        compose_config(SINGLE_RUN + FAST_MODEL + FAST_TRAINER + overrides, fast=False), tmp_path / "run"
    )
    assert summary["metrics"]["val/kl"] >= 0
    assert 0 <= summary["metrics"]["val/rewards/accuracy"] <= 1


def test_kto_chooses_its_desirable_weight_from_the_training_data_and_records_it(tmp_path: Path, caplog):
    caplog.set_level(logging.INFO, logger="dpo_exp")
    # 10 desirable and 30 undesirable training rows (one is dropped: an empty completion)
    rows = [
        {"prompt": f"{i}+{i}=", "completion": str(2 * i + (i % 4 != 0)), "label": i % 4 == 0}
        for i in range(40)
    ]
    train = write_jsonl(tmp_path / "kto.jsonl", [*rows, {"prompt": "p", "completion": " ", "label": True}])
    validation = write_jsonl(
        tmp_path / "kto_val.jsonl", [{**row, "prompt": "v" + row["prompt"]} for row in rows[:8]]
    )
    overrides = [
        "loss=kto",  # desirable_weight: auto, its default
        "data=unpaired",
        f"data.train_path={train}",
        f"data.validation_path={validation}",
        "data.batch_size=8",
        "data.max_length=32",
        "data.max_prompt_length=16",
        *TWO_STEPS,
    ]
    run_dir = tmp_path / "run"
    summary = run(compose_config(SINGLE_RUN + FAST_MODEL + FAST_TRAINER + overrides, fast=False), run_dir)
    # 1 * 10 / 30 = 1/3 below [1, 4/3]: w_D = 30 / 10 = 3, so that w_D * n_D / (w_U * n_U) = 1
    assert "kto desirable_weight auto = 3 (n_D 10, n_U 30: w_D*n_D / (w_U*n_U) = 0.333 -> 1)" in caplog.text
    assert summary["loss_options"] == {"desirable_weight": 3.0, "undesirable_weight": 1.0}
    assert summary["auto_loss_options"]["desirable_weight"]["n_desirable"] == 10
    assert json.loads((run_dir / "summary.json").read_text())["loss_options"]["desirable_weight"] == 3.0
    hparams = yaml.safe_load((run_dir / "hparams.yaml").read_text())
    assert hparams["loss_options"] == {"desirable_weight": 3.0, "undesirable_weight": 1.0}


def test_a_bad_row_names_file_row_and_field_before_any_model(tmp_path: Path, monkeypatch):
    rows = [{"prompt": "a", "chosen": "b", "rejected": "c"}] * 5 + [
        {"prompt": "a", "chosen": None, "rejected": "c"}
    ]
    data_file = write_jsonl(tmp_path / "bad.jsonl", rows)
    monkeypatch.setattr("dpo_exp.training.run.load_policy", lambda *a: pytest.fail("a model was loaded"))
    cfg = compose_config(
        SINGLE_RUN + FAST_MODEL + FAST_TRAINER + ["data=pairs", f"data.train_path={data_file}"], fast=False
    )
    with pytest.raises(DataError) as raised:
        run(cfg, tmp_path / "run")
    assert (
        "bad.jsonl" in str(raised.value) and "line 6" in str(raised.value) and "'chosen'" in str(raised.value)
    )
    assert not (tmp_path / "run" / "summary.json").exists()


def test_fewer_examples_than_one_batch_are_refused_naming_both_counts(tmp_path: Path):
    rows = [{"prompt": f"{i}+{i}=", "chosen": str(2 * i), "rejected": str(2 * i + 1)} for i in range(9)]
    data_file = write_jsonl(tmp_path / "seven.jsonl", rows[:7])
    held_out = write_jsonl(tmp_path / "held_out.jsonl", rows[7:])
    overrides = ["data=pairs", f"data.train_path={data_file}", f"data.validation_path={held_out}",
                 "data.batch_size=8"]  # fmt: skip
    cfg = compose_config(SINGLE_RUN + FAST_MODEL + FAST_TRAINER + overrides, fast=False)
    with pytest.raises(
        DataError, match=r"7 training examples, fewer than one batch of 8 \(data.batch_size 8"
    ):
        run(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "summary.json").exists()


def test_an_empty_dataset_after_filtering_is_an_error(tmp_path: Path):
    rows = [{"prompt": "p", "chosen": "same", "rejected": "same"}] * 20
    data_file = write_jsonl(tmp_path / "ties.jsonl", rows)
    cfg = compose_config(
        SINGLE_RUN + FAST_MODEL + FAST_TRAINER + ["data=pairs", f"data.train_path={data_file}"], fast=False
    )
    with pytest.raises(DataError, match="no examples left"):
        run(cfg, tmp_path / "run")


def test_validation_rows_repeated_from_training_are_counted_in_the_summary(tmp_path: Path):
    rows = [{"prompt": f"{i}+{i}=", "chosen": str(2 * i), "rejected": str(2 * i + 1)} for i in range(40)]
    train = write_jsonl(tmp_path / "train.jsonl", rows[:32])
    validation = write_jsonl(tmp_path / "val.jsonl", rows[29:32] + rows[32:])  # 3 of 11 rows are in train
    overrides = ["data=pairs", f"data.train_path={train}", f"data.validation_path={validation}", *TWO_STEPS]
    summary = run(
        compose_config(SINGLE_RUN + FAST_MODEL + FAST_TRAINER + overrides, fast=False), tmp_path / "run"
    )
    assert summary["data"]["validation"]["overlap_with_train"] == 3
    assert summary["data"]["validation"]["rows_kept"] == 11


def test_a_run_with_export_push_to_hub_uploads_its_model_folder(tmp_path, monkeypatch):
    import huggingface_hub

    uploads = []

    class RecordingApi:
        def create_repo(self, repo_id, **options):
            pass

        def upload_folder(self, **options):
            uploads.append(options)
            return "https://huggingface.co/me/tiny-dpo/commit/1"

    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingApi)
    summary = run(compose_config(["trainer.max_steps=2", "export.push_to_hub=me/tiny-dpo"]), tmp_path)
    assert uploads == [{"folder_path": summary["export_dir"], "repo_id": "me/tiny-dpo", "repo_type": "model"}]
    assert (Path(summary["export_dir"]) / "README.md").exists()
