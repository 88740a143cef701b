"""The likelihood-displacement alarm: when it fires, what it says, and that it says it once."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import torch

from dpo_exp.training.alarms import ALARM_METRIC, LikelihoodDisplacementAlarm, displacement


def point(chosen: float, margin: float, step: int = 0) -> dict[str, float]:
    return {"chosen": chosen, "margin": margin, "step": step}


def test_displacement_by_hand():
    assert displacement(point(-0.1, 1.0), point(-0.4, 2.0))  # chosen falls below 0, margin grows
    assert displacement(point(0.3, 1.0), point(-0.2, 2.0))  # crosses 0 on the way down
    assert not displacement(point(0.5, 1.0), point(0.2, 2.0))  # falls, but still above the reference
    assert not displacement(point(-0.1, 1.0), point(-0.4, 0.8))  # margin shrinks too: no alarm
    assert not displacement(point(-0.4, 1.0), point(-0.1, 2.0))  # chosen rises
    # Below the threshold (DROP = 0.1 nats): drift, not displacement.
    assert not displacement(point(0.0, 0.1), point(-0.02, 0.2))  # a few hundredths below 0
    assert not displacement(point(-0.3, 0.1), point(-0.35, 0.2))  # fell by 0.05 only


def test_the_message_fits_the_sign_of_the_margin_and_the_loss():
    from dpo_exp.training.alarms import displacement_message

    positive = displacement_message(point(0.0, 0.5), point(-0.3, 0.8))
    assert "only less so than the rejected ones" in positive and "loss=rpo" in positive
    negative = displacement_message(point(0.0, -0.8), point(-0.3, -0.5), "dpo")
    assert "still negative" in negative and "only less so" not in negative
    assert "loss=rpo" not in displacement_message(point(0.0, 0.5), point(-0.3, 0.8), "kto")
    assert "loss.desirable_weight" in displacement_message(point(0.0, 0.5), point(-0.3, 0.8), "kto")
    assert "a larger loss.alpha" in displacement_message(point(0.0, 0.5), point(-0.3, 0.8), "rpo")


class Recorder:
    def __init__(self) -> None:
        self.logged: list[tuple[dict, int]] = []

    def log_metrics(self, metrics: dict, step: int) -> None:
        self.logged.append((metrics, step))


def validate(
    alarm: LikelihoodDisplacementAlarm, trainer: SimpleNamespace, chosen: float, margin: float
) -> None:
    trainer.global_step += 100
    trainer.callback_metrics = {
        "val/logratio/chosen": torch.tensor(chosen),
        "val/rewards/margin": torch.tensor(margin),
    }
    alarm.on_validation_end(trainer, None)


def test_the_alarm_warns_logs_and_records_once(caplog):
    logger = Recorder()
    trainer = SimpleNamespace(global_step=0, sanity_checking=False, is_global_zero=True, loggers=[logger])
    alarm = LikelihoodDisplacementAlarm()
    with caplog.at_level(logging.WARNING):
        validate(alarm, trainer, 0.2, 0.5)  # step 100: the first evaluation, nothing to compare
        validate(alarm, trainer, -0.1, 1.5)  # step 200: fires
        validate(alarm, trainer, -0.5, 2.5)  # step 300: still displacing, but said once
    assert alarm.fired["from"] == pytest.approx(point(0.2, 0.5, 100))
    assert alarm.fired["to"] == pytest.approx(point(-0.1, 1.5, 200))
    assert logger.logged == [({ALARM_METRIC: 1.0}, 200)]
    (message,) = [record.getMessage() for record in caplog.records if "displacement" in record.getMessage()]
    assert "fell from +0.200 to -0.100 (step 100 -> 200) while the margin grew from 0.500 to 1.500" in message
    assert "loss=rpo" in message and "larger beta" in message


def test_the_alarm_state_survives_a_resume():
    alarm = LikelihoodDisplacementAlarm()
    alarm.previous = point(-0.1, 1.0, 100)
    resumed = LikelihoodDisplacementAlarm()
    resumed.load_state_dict(alarm.state_dict())
    assert resumed.previous == point(-0.1, 1.0, 100) and resumed.fired is None
