"""Loss options as a run gives them to its loss: `auto` ones chosen from the training data."""

from __future__ import annotations

import logging
from collections import Counter

import pytest
from omegaconf import DictConfig, OmegaConf

from dpo_exp.data.collate import IndexedItem
from dpo_exp.data.module import PreparedData, PreparedSplit
from dpo_exp.data.report import build_report
from dpo_exp.data.tokenize import TokenizedUnpaired
from dpo_exp.errors import ConfigError
from dpo_exp.losses import get_loss
from dpo_exp.training.build import resolve_loss_options


def unpaired_data(n_desirable: int, n_undesirable: int) -> PreparedData:
    """Training examples (the counts that matter), and one validation example."""
    labels = [True] * n_desirable + [False] * n_undesirable
    kept = [TokenizedUnpaired([5], [6, 2], desirable) for desirable in labels]
    train = PreparedSplit(
        [IndexedItem(i, item) for i, item in enumerate(kept)], build_report(len(kept), kept, Counter())
    )
    validation = PreparedSplit([IndexedItem(0, kept[0])], build_report(1, kept[:1], Counter()))
    return PreparedData(train, validation)


def kto(**options) -> DictConfig:
    return OmegaConf.create({"name": "kto", "desirable_weight": "auto", "undesirable_weight": 1.0, **options})


def test_auto_desirable_weight_is_chosen_from_the_training_counts_and_printed(caplog):
    caplog.set_level(logging.INFO, logger="dpo_exp")
    # 10 desirable, 30 undesirable: 1 * 10 / 30 = 1/3 < 1, so w_D = 30 / 10 = 3 (ratio 1)
    options, chosen = resolve_loss_options(kto(), get_loss("kto"), unpaired_data(10, 30))
    assert options == {"desirable_weight": 3.0, "undesirable_weight": 1.0}
    assert chosen == {
        "desirable_weight": {
            "value": 3.0,
            "n_desirable": 10,
            "n_undesirable": 30,
            "ratio": pytest.approx(1.0),
        }
    }
    assert "kto desirable_weight auto = 3 (n_D 10, n_U 30: w_D*n_D / (w_U*n_U) = 0.333 -> 1)" in caplog.text


def test_auto_desirable_weight_counts_the_undesirable_weight():
    # 40 / (2 * 20) = 1, in range: 1.0 stays
    options, _ = resolve_loss_options(kto(undesirable_weight=2.0), get_loss("kto"), unpaired_data(40, 20))
    assert options["desirable_weight"] == 1.0


def test_a_number_given_is_used_unchanged():
    options, chosen = resolve_loss_options(kto(desirable_weight=0.5), get_loss("kto"), unpaired_data(10, 30))
    assert options == {"desirable_weight": 0.5, "undesirable_weight": 1.0} and chosen == {}


def test_auto_without_desirable_examples_names_the_key():
    with pytest.raises(ConfigError) as raised:
        resolve_loss_options(kto(), get_loss("kto"), unpaired_data(0, 30))
    message = str(raised.value)
    assert message.startswith("loss.desirable_weight=auto: the training data has no desirable examples")
    assert "set loss.desirable_weight to a number" in message
