"""The data's own numbers per pair: each response's reward (for the reward-aware losses) and the
pair's weight, read from a pairs file, carried in fp32 to the loss, refused where they cannot apply."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from dpo_exp.cli import run
from dpo_exp.data.records import DataError
from dpo_exp.data.sources import load_records
from tests.helpers import FAST_MODEL, FAST_TRAINER, assemble, compose_config


def scored_pairs(path: Path, count: int, **extra_columns) -> str:
    """Pairs whose chosen answer copies the prompt; rewards and weights as the columns ask."""
    rows = []
    for i in range(count):
        word = "abcdefgh"[i % 8] + "abcdefgh"[i // 8 % 8] + "cd"  # distinct for i < 64
        row = {"prompt": f"{word}=", "chosen": word, "rejected": word[::-1] + "x"}
        row.update({name: value(i) for name, value in extra_columns.items()})
        rows.append(row)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def data_overrides(train: str) -> list[str]:
    """The file's pairs, 4 of them cut for validation."""
    data = ["data=pairs", f"data.train_path={train}", "data.val_size=4", "data.batch_size=4",
            "data.eval_batch_size=8", "data.max_length=32", "data.max_prompt_length=16"]  # fmt: skip
    return [*FAST_MODEL, *FAST_TRAINER, *data]


REWARDS = {"score_chosen": lambda i: 1.0 + i % 3, "score_rejected": lambda i: float(i % 2)}


def test_a_pairs_file_with_rewards_and_weights_reaches_the_batch_in_fp32(tmp_path):
    train = scored_pairs(tmp_path / "train.jsonl", 16, **REWARDS, weight=lambda i: 0.5 * (i % 4))
    cfg = compose_config([*data_overrides(train), "loss=reward_gap_sq"], fast=False)
    _, datamodule = assemble(cfg)
    batch = next(iter(datamodule.train_dataloader()))
    for name in ("chosen_scores", "rejected_scores", "pair_weights"):
        assert batch[name].values.dtype == torch.float32 and batch[name].values.shape == (4,)
    records = load_records("pairs", train)
    assert (records[5].chosen_score, records[5].rejected_score, records[5].weight) == (3.0, 1.0, 0.5)


@pytest.mark.parametrize("loss", ["reward_gap_sq", "reward_gap_fwd_kl", "reward_gap_bwd_kl", "reward_scaled"])
def test_every_reward_aware_loss_trains_two_steps_on_rewarded_pairs(loss, tmp_path):
    train = scored_pairs(tmp_path / "train.jsonl", 16, **REWARDS)
    cfg = compose_config([*data_overrides(train), f"loss={loss}", "trainer.max_steps=2"], fast=False)
    summary = run(cfg, tmp_path / "run")
    assert summary["global_step"] == 2 and math.isfinite(summary["metrics"]["val/loss"])


def test_a_reward_aware_loss_on_pairs_without_rewards_is_refused_naming_the_columns(tmp_path):
    train = scored_pairs(tmp_path / "train.jsonl", 16)
    cfg = compose_config([*data_overrides(train), "loss=reward_gap_sq"], fast=False)
    with pytest.raises(
        DataError, match="loss=reward_gap_sq takes each response's reward, and the train data"
    ):
        assemble(cfg)


def test_aot_refuses_weighted_pairs(tmp_path):
    train = scored_pairs(tmp_path / "train.jsonl", 16, weight=lambda i: 1.0)
    cfg = compose_config([*data_overrides(train), "loss=aot"], fast=False)
    with pytest.raises(DataError, match="loss=aot sorts the batch's margins"):
        assemble(cfg)


@pytest.mark.parametrize(
    ("columns", "field", "message"),
    [
        (
            {"score_chosen": lambda i: 1.0},
            "score_rejected",
            "gives one response's reward but not the other's",
        ),
        ({**REWARDS, "weight": lambda i: -1.0 if i == 3 else 1.0}, "weight", "weight must be >= 0"),
        (
            {"score_chosen": lambda i: "good", "score_rejected": lambda i: 0.0},
            "score_chosen",
            "finite number",
        ),
    ],
)
def test_bad_rewards_and_weights_name_the_row_and_field(columns, field, message, tmp_path):
    path = scored_pairs(tmp_path / "train.jsonl", 8, **columns)
    with pytest.raises(DataError, match=message) as error:
        load_records("pairs", path)
    assert field in str(error.value) and "train.jsonl" in str(error.value)


def test_pair_weights_scale_each_pairs_share_of_the_training_loss(tmp_path):
    """Weights 0 and 2 on alternate pairs: the step's loss is the mean of 2 x the weighted ones."""
    train = scored_pairs(tmp_path / "train.jsonl", 16, weight=lambda i: 2.0 * (i % 2))
    cfg = compose_config([*data_overrides(train), "loss=dpo", "data.shuffle=false"], fast=False)
    module, datamodule = assemble(cfg)
    batch = next(iter(datamodule.train_dataloader()))
    module.log = lambda *args, **kwargs: None
    weighted, tensors = module._step(batch, "train")
    per_pair = module._call_loss(tensors).loss
    assert torch.allclose(weighted, (per_pair * batch["pair_weights"].values).mean())
    assert not torch.allclose(weighted, per_pair.mean())
